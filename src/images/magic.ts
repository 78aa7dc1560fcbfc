// Image magics (CRIU's criu/include/magic.h values).
export const IMG_COMMON_MAGIC = 0x54564319;
export const IMG_SERVICE_MAGIC = 0x55105940;

export const MAGIC = {
  INVENTORY: 0x58313116,
  PSTREE: 0x50273030,
  CORE: 0x55053847,
  IDS: 0x54432030,
  MM: 0x57492820,
  PAGEMAP: 0x56084025,
  FS: 0x51403912,
  FILES: 0x56303138,
  FDINFO: 0x56213732,
  REG_FILES: 0x50363636,
  PIPES: 0x56513555,
  PIPES_DATA: 0x56453709,
} as const;
export type ImageKind = keyof typeof MAGIC;
