// Credentials, capabilities, scheduling, seccomp, namespaces' proc files.
export const LINUX_CAPABILITY_VERSION_3 = 0x20080522;
/** Highest capability number this code knows (CAP_CHECKPOINT_RESTORE). */
export const CAP_LAST_CAP = 40;
export const CAP = { SYS_ADMIN: 21, SYS_RESOURCE: 24, CHECKPOINT_RESTORE: 40, SETUID: 7, SETGID: 6, SETPCAP: 8, SYS_PTRACE: 19, NET_ADMIN: 12 } as const;
export const SECCOMP = {
  MODE_DISABLED: 0, MODE_STRICT: 1, MODE_FILTER: 2, SET_MODE_STRICT: 0, SET_MODE_FILTER: 1,
  FILTER_FLAG_TSYNC: 1, FILTER_FLAG_LOG: 2, FILTER_FLAG_SPEC_ALLOW: 4,
  RET_ACTION_FULL: 0xffff0000, RET_USER_NOTIF: 0x7fc00000,
} as const;
/** BPF opcode of a return with a constant (BPF_RET | BPF_K). */
export const BPF_RET_K = 0x06;
/** struct seccomp_metadata (PTRACE_SECCOMP_GET_METADATA). */
export const SECCOMP_METADATA_SIZE = 16;
export const SCHED = { OTHER: 0, FIFO: 1, RR: 2, BATCH: 3, IDLE: 5, DEADLINE: 6, RESET_ON_FORK: 0x40000000 } as const;
export const PRIO_PROCESS = 0;
/** Kernel thread flag in /proc/PID/stat's flags. */
export const PF_KTHREAD = 0x00200000;
