// Memory mappings, prctl options, arch_prctl, timers, limits, clone flags.
export const PAGE_SIZE = 4096;
/** Most iovecs one readv/process_vm_readv takes (UIO_MAXIOV). */
export const UIO_MAXIOV = 1024;
export const PROT = { NONE: 0, READ: 1, WRITE: 2, EXEC: 4 } as const;
export const MAP = {
  SHARED: 0x01, PRIVATE: 0x02, DROPPABLE: 0x08, FIXED: 0x10, ANONYMOUS: 0x20, GROWSDOWN: 0x100, DENYWRITE: 0x800,
  EXECUTABLE: 0x1000, LOCKED: 0x2000, NORESERVE: 0x4000, POPULATE: 0x8000, FIXED_NOREPLACE: 0x100000,
} as const;
export const MREMAP = { MAYMOVE: 1, FIXED: 2, DONTUNMAP: 4 } as const;
export const MADV = {
  NORMAL: 0, RANDOM: 1, SEQUENTIAL: 2, WILLNEED: 3, DONTNEED: 4, FREE: 8, REMOVE: 9, DONTFORK: 10, DOFORK: 11,
  MERGEABLE: 12, UNMERGEABLE: 13, HUGEPAGE: 14, NOHUGEPAGE: 15, DONTDUMP: 16, DODUMP: 17, WIPEONFORK: 18,
  KEEPONFORK: 19, COLD: 20, PAGEOUT: 21, POPULATE_READ: 22, POPULATE_WRITE: 23, GUARD_INSTALL: 102, GUARD_REMOVE: 103,
} as const;

export const PR = {
  SET_PDEATHSIG: 1, GET_PDEATHSIG: 2, GET_DUMPABLE: 3, SET_DUMPABLE: 4, GET_KEEPCAPS: 7, SET_KEEPCAPS: 8,
  SET_NAME: 15, GET_NAME: 16, GET_SECCOMP: 21, SET_SECCOMP: 22, CAPBSET_READ: 23, CAPBSET_DROP: 24,
  GET_SECUREBITS: 27, SET_SECUREBITS: 28, SET_TIMERSLACK: 29, GET_TIMERSLACK: 30,
  SET_MM: 35, SET_CHILD_SUBREAPER: 36, GET_CHILD_SUBREAPER: 37, SET_NO_NEW_PRIVS: 38, GET_NO_NEW_PRIVS: 39,
  GET_TID_ADDRESS: 40, SET_THP_DISABLE: 41, GET_THP_DISABLE: 42, CAP_AMBIENT: 47, TIMER_CREATE_RESTORE_IDS: 77,
} as const;
export const PR_SET_MM = { MAP: 14, MAP_SIZE: 15 } as const;
export const PR_CAP_AMBIENT = { IS_SET: 1, RAISE: 2, LOWER: 3, CLEAR_ALL: 4 } as const;
/** PR_SET_THP_DISABLE's arg3 flag (6.18): THP stays for madvise(MADV_HUGEPAGE)d areas; PR_GET_THP_DISABLE then answers 1 | this. */
export const PR_THP_DISABLE_EXCEPT_ADVISED = 1 << 1;

export const ARCH = { SET_GS: 0x1001, SET_FS: 0x1002, GET_FS: 0x1003, GET_GS: 0x1004 } as const;

export const ITIMER = { REAL: 0, VIRTUAL: 1, PROF: 2 } as const;
export const CLOCK = { REALTIME: 0, MONOTONIC: 1, BOOTTIME: 7 } as const;
export const RLIMIT_NLIMITS = 16;
export const RLIM_INFINITY = 0xffffffffffffffffn;
export const RLIMIT_NAMES = [
  'CPU', 'FSIZE', 'DATA', 'STACK', 'CORE', 'RSS', 'NPROC', 'NOFILE', 'MEMLOCK', 'AS', 'LOCKS', 'SIGPENDING',
  'MSGQUEUE', 'NICE', 'RTPRIO', 'RTTIME',
] as const;

/** AIO: the ring's magic and header version (fs/aio.c), iocb opcodes. */
export const AIO_RING_MAGIC = 0xa10a10a1;
export const IOCB_CMD = { PREAD: 0, PWRITE: 1 } as const;

export const KCMP = { FILE: 0, VM: 1, FILES: 2, FS: 3, SIGHAND: 4, IO: 5, SYSVSEM: 6, EPOLL_TFD: 7 } as const;

export const CLONE = {
  VM: 0x100, FS: 0x200, FILES: 0x400, SIGHAND: 0x800, PIDFD: 0x1000, PTRACE: 0x2000, VFORK: 0x4000,
  PARENT: 0x8000, THREAD: 0x10000, NEWNS: 0x20000, SYSVSEM: 0x40000, SETTLS: 0x80000,
  PARENT_SETTID: 0x100000, CHILD_CLEARTID: 0x200000, CHILD_SETTID: 0x1000000, NEWCGROUP: 0x02000000,
  NEWUTS: 0x04000000, NEWIPC: 0x08000000, NEWUSER: 0x10000000, NEWPID: 0x20000000, NEWNET: 0x40000000,
  NEWTIME: 0x80,
} as const;

export const RSEQ_FLAG_UNREGISTER = 1;

/** The syscall instruction followed by int3: what a remote syscall executes. */
export const SYSCALL_INT3 = Buffer.from([0x0f, 0x05, 0xcc]);
export const SYSCALL_INSN = Buffer.from([0x0f, 0x05]);
export const SYSCALL_INSN_LEN = 2;
