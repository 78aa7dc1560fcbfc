// Credentials, capabilities, scheduling, seccomp, namespaces' proc files.
export const LINUX_CAPABILITY_VERSION_3 = 0x20080522;
/** Highest capability number this code knows (CAP_CHECKPOINT_RESTORE). */
export const CAP_LAST_CAP = 40;
/** Capability names by number (include/uapi/linux/capability.h), for messages. */
export const CAP_NAMES = [
  'CHOWN', 'DAC_OVERRIDE', 'DAC_READ_SEARCH', 'FOWNER', 'FSETID', 'KILL', 'SETGID', 'SETUID', 'SETPCAP',
  'LINUX_IMMUTABLE', 'NET_BIND_SERVICE', 'NET_BROADCAST', 'NET_ADMIN', 'NET_RAW', 'IPC_LOCK', 'IPC_OWNER',
  'SYS_MODULE', 'SYS_RAWIO', 'SYS_CHROOT', 'SYS_PTRACE', 'SYS_PACCT', 'SYS_ADMIN', 'SYS_BOOT', 'SYS_NICE',
  'SYS_RESOURCE', 'SYS_TIME', 'SYS_TTY_CONFIG', 'MKNOD', 'LEASE', 'AUDIT_WRITE', 'AUDIT_CONTROL', 'SETFCAP',
  'MAC_OVERRIDE', 'MAC_ADMIN', 'SYSLOG', 'WAKE_ALARM', 'BLOCK_SUSPEND', 'AUDIT_READ', 'PERFMON', 'BPF',
  'CHECKPOINT_RESTORE',
] as const;
/** Capability numbers by name: CAP.SYS_ADMIN is 21. */
export const CAP = Object.fromEntries(CAP_NAMES.map((n, i) => [n, i])) as { readonly [K in (typeof CAP_NAMES)[number]]: number };
/** 32-bit words per capability set in capget/capset version 3. */
export const LINUX_CAPABILITY_U32S_3 = 2;
/** prctl(PR_SET_SECUREBITS) bits (include/uapi/linux/securebits.h); each lock bit is its bit << 1. */
export const SECBIT = {
  NOROOT: 0x01, NOROOT_LOCKED: 0x02, NO_SETUID_FIXUP: 0x04, NO_SETUID_FIXUP_LOCKED: 0x08,
  KEEP_CAPS: 0x10, KEEP_CAPS_LOCKED: 0x20, NO_CAP_AMBIENT_RAISE: 0x40, NO_CAP_AMBIENT_RAISE_LOCKED: 0x80,
  EXEC_RESTRICT_FILE: 0x100, EXEC_RESTRICT_FILE_LOCKED: 0x200, EXEC_DENY_INTERACTIVE: 0x400, EXEC_DENY_INTERACTIVE_LOCKED: 0x800,
} as const;
/** Every lock bit of SECBIT (the odd positions). */
export const SECBIT_ALL_LOCKS = 0xaaa;
/** membarrier(2) commands (include/uapi/linux/membarrier.h): each REGISTER_x is x << 1. */
export const MEMBARRIER_CMD = {
  QUERY: 0, GLOBAL: 1 << 0, GLOBAL_EXPEDITED: 1 << 1, REGISTER_GLOBAL_EXPEDITED: 1 << 2,
  PRIVATE_EXPEDITED: 1 << 3, REGISTER_PRIVATE_EXPEDITED: 1 << 4, PRIVATE_EXPEDITED_SYNC_CORE: 1 << 5,
  REGISTER_PRIVATE_EXPEDITED_SYNC_CORE: 1 << 6, PRIVATE_EXPEDITED_RSEQ: 1 << 7, REGISTER_PRIVATE_EXPEDITED_RSEQ: 1 << 8,
  GET_REGISTRATIONS: 1 << 9,
} as const;
/** ioctl on a namespace fd: an fd of the user namespace that owns it. */
export const NS_GET_USERNS = 0xb701;
/** statfs f_type of the mqueue filesystem (POSIX message queues). */
export const MQUEUE_MAGIC = 0x19800202;
/** statfs f_type of hugetlbfs (MFD_HUGETLB memfds too) and of procfs. */
export const HUGETLBFS_MAGIC = 0x958458f6;
export const PROC_SUPER_MAGIC = 0x9fa0;
/** statfs f_type of filesystems whose directories are kernel objects (mkdir there makes a cgroup, or fails). */
export const KERNEL_OBJECT_FS_MAGICS: readonly number[] = [
  0x9fa0 /* proc */, 0x62656572 /* sysfs */, 0x27e0eb /* cgroup */, 0x63677270 /* cgroup2 */, 0x64626720 /* debugfs */,
  0x74726163 /* tracefs */, 0xcafe4a11 /* bpf */, 0x62656570 /* configfs */, 0x73636673 /* securityfs */, 0x1cd1 /* devpts */,
];
/** statfs f_type of nsfs (the files behind /proc/PID/ns/*). */
export const NSFS_MAGIC = 0x6e736673;
/** ioctl on a namespace fd: its kind, as a CLONE_NEW* flag. */
export const NS_GET_NSTYPE = 0xb703;
/** An unset /proc/PID/loginuid ((uid_t)-1). */
export const AUDIT_UID_UNSET = 0xffffffff;
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
/** ioprio_get/ioprio_set (linux/ioprio.h): who, and the class above the level and hint bits. */
export const IOPRIO = { WHO_PROCESS: 1, CLASS_SHIFT: 13, CLASS: { NONE: 0, RT: 1, BE: 2, IDLE: 3 } } as const;
/** Bytes of a CPU mask for sched_{get,set}affinity (glibc's cpu_set_t: 1024 CPUs), in 64-bit words. */
export const CPU_SET_BYTES = 128;
export const CPU_SET_WORD_BITS = 64;
/** Kernel thread flag in /proc/PID/stat's flags. */
export const PF_KTHREAD = 0x00200000;
/** glibc's posix_spawn(3) argument objects on x86-64 (opaque to us: only their sizes). */
export const POSIX_SPAWN_FILE_ACTIONS_SIZE = 80;
export const POSIX_SPAWNATTR_SIZE = 336;
/** glibc's sigset_t (1024 bits), as posix_spawnattr_setsigdefault/setsigmask take it. */
export const LIBC_SIGSET_SIZE = 128;
/** posix_spawnattr_setflags flags (spawn.h). */
export const POSIX_SPAWN = { SETSIGDEF: 0x04, SETSIGMASK: 0x08 } as const;
