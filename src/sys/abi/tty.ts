// Terminals: tty ioctls (asm-generic/ioctls.h), the kernel's struct termios
// (what TCGETS/TCSETS copy: no speeds, NCCS = 19), termios flags, and the
// device numbers of terminals (major/minor from include/uapi/linux/major.h).
import { struct } from './struct';

/** struct termios as the TCGETS/TCSETS ioctls copy it (asm-generic/termbits.h). */
export const KERNEL_NCCS = 19;
export const TERMIOS = struct({ iflag: 'u32', oflag: 'u32', cflag: 'u32', lflag: 'u32', line: 'u8', cc: { bytes: KERNEL_NCCS } });

export const TIOC = {
  TCGETS: 0x5401, TCSETS: 0x5402, EXCL: 0x540c, NXCL: 0x540d, SCTTY: 0x540e, GPGRP: 0x540f, SPGRP: 0x5410,
  SWINSZ: 0x5414, INQ: 0x541b, PKT: 0x5420, NOTTY: 0x5422, GSID: 0x5429,
  /** _IOR('T', 0x30, unsigned int) */
  GPTN: 0x80045430,
  /** _IOW('T', 0x31, int) */
  SPTLCK: 0x40045431,
  /** _IOR('T', 0x38, int) */
  GPKT: 0x80045438,
  /** _IOR('T', 0x39, int) */
  GPTLCK: 0x80045439,
  /** _IOR('T', 0x40, int) */
  GEXCL: 0x80045440,
  GPTPEER: 0x5441,
  GLCKTRMIOS: 0x5456, SLCKTRMIOS: 0x5457,
} as const;

/** c_lflag bits. */
export const TERMIOS_L = { ISIG: 0o1, ICANON: 0o2, ECHO: 0o10, IEXTEN: 0o100000 } as const;

/** Device majors of terminals, and the minors that matter. */
export const TTY_DEV = {
  /** Virtual consoles tty1..tty63 (MIN_NR_CONSOLES..MAX_NR_CONSOLES); tty0 is the current one. */
  VT_MAJOR: 4, VT_MIN: 1, VT_MAX: 63,
  /** TTYAUX_MAJOR: /dev/tty (0), /dev/console (1), /dev/ptmx (2). */
  AUX_MAJOR: 5, CTTY_MINOR: 0, CONSOLE_MINOR: 1, PTMX_MINOR: 2,
  /** UNIX98_PTY_SLAVE_MAJOR and the majors after it (UNIX98_PTY_MAJOR_COUNT). */
  PTS_MAJOR: 136, PTS_MAJORS: 8, PTS_PER_MAJOR: 256,
} as const;

/** major and minor of a dev_t as stat(2) reports it (glibc's gnu_dev_major/minor). */
export function devMajor(rdev: number): number { return Number(((BigInt(rdev) >> 8n) & 0xfffn) | ((BigInt(rdev) >> 32n) & ~0xfffn)); }
export function devMinor(rdev: number): number { return Number((BigInt(rdev) & 0xffn) | ((BigInt(rdev) >> 12n) & ~0xffn)); }
