// CRIU's enums and image constants, in one place (values from its images/*.proto
// and criu/include/*.h, which are facts of the format).
import { SCHEMA } from './schema';

/** fd_types (fdinfo.proto). */
export const FD_TYPES = SCHEMA.enums.fd_types;
export const FD_TYPE_NAMES: Record<number, string> = Object.fromEntries(Object.entries(FD_TYPES).map(([k, v]) => [v, k]));
export const TTY_TYPE = SCHEMA.enums.TtyType;

/** vma_entry.status bits (CRIU's VMA_AREA_* / VMA_* flags). */
export const VMA = {
  AREA_REGULAR: 1 << 0, AREA_STACK: 1 << 1, AREA_VSYSCALL: 1 << 2, AREA_VDSO: 1 << 3, AREA_HEAP: 1 << 5,
  FILE_PRIVATE: 1 << 6, FILE_SHARED: 1 << 7, ANON_SHARED: 1 << 8, ANON_PRIVATE: 1 << 9, AREA_SYSVIPC: 1 << 10,
  AREA_SOCKET: 1 << 11, AREA_VVAR: 1 << 12, AREA_AIORING: 1 << 13, AREA_MEMFD: 1 << 14,
  /** Not a mapping: pages of the VMA around it made guard pages (madvise MADV_GUARD_INSTALL), listed after the VMAs. */
  AREA_GUARD: 1 << 16,
} as const;

/** pagemap_entry.flags */
export const PE = { PARENT: 1, LAZY: 2, PRESENT: 4 } as const;

/** task_core_entry.task_state */
export const TASK_STATE = { ALIVE: 1, DEAD: 2, STOPPED: 3, HELPER: 4, THREAD: 5, ZOMBIE: 6 } as const;

/** core_entry.mtype */
export const MARCH = SCHEMA.enums.march;
/** user_x86_regs_entry.mode */
export const REGS_MODE = SCHEMA.enums.user_x86_regs_mode;

/** fdinfo_entry.flags: close-on-exec. */
export const FDINFO_CLOEXEC = 1;

/** unix_sk_entry.uflags */
export const USK = { EXTERN: 1, SERVICE: 2, CALLBACK: 4, INHERIT: 8 } as const;

/** sk_shutdown (unix_sk_entry / inet_sk_entry .shutdown): the kernel's sk_shutdown bits. */
export const SK_SHUTDOWN = SCHEMA.enums.sk_shutdown;

/** remap_file_path_entry.remap_type */
export const REMAP = SCHEMA.enums.remap_type;

/** inventory_entry.img_version: CRIU_IMAGES_V1_1. */
export const IMG_VERSION = 2;

/** inventory_entry.network_lock_method (criu/include/cr_options.h, enum NETWORK_LOCK_METHOD). */
export const NETWORK_LOCK = { IPTABLES: 0, NFTABLES: 1, SKIP: 2 } as const;

/** file_lock_entry.type (CRIU's FL_* kinds). */
export const FL_KIND = { POSIX: 1, FLOCK: 2, OFD: 4, LEASE: 8 } as const;
/** file_lock_entry.type of a lease being broken: the type it is becoming, with this bit (criu's LEASE_BREAKING). */
export const LEASE_BREAKING = 4;

/** fown_entry with no owner (F_SETOWN not used). */
export const NO_FOWN = { uid: 0, euid: 0, signum: 0, pid_type: 0, pid: 0 };
