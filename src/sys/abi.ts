// x86-64 Linux ABI: syscall numbers, constants and struct layouts, written
// once here (from the kernel's uapi headers) and used by name everywhere else.

export const SYS = {
  read: 0, write: 1, open: 2, close: 3, fstat: 5, lseek: 8, mmap: 9, mprotect: 10, munmap: 11, brk: 12,
  rt_sigaction: 13, rt_sigprocmask: 14, rt_sigreturn: 15, ioctl: 16, pread64: 17, pwrite64: 18,
  mremap: 25, msync: 26, mincore: 27, madvise: 28, dup: 32, dup2: 33, pause: 34, nanosleep: 35,
  getitimer: 36, setitimer: 38, getpid: 39, socket: 41, clone: 56, fork: 57, execve: 59, exit: 60,
  wait4: 61, kill: 62, uname: 63, fcntl: 72, ftruncate: 77, getcwd: 79, chdir: 80, fchdir: 81,
  umask: 95, getrlimit: 97, ptrace: 101, getuid: 102, setpgid: 109, getppid: 110, setsid: 112,
  getpgid: 121, getsid: 124, rt_sigpending: 127, rt_sigqueueinfo: 129, sigaltstack: 131,
  personality: 135, mlock: 149, prctl: 157, arch_prctl: 158, setrlimit: 160, chroot: 161, gettid: 186,
  tkill: 200, futex: 202, set_tid_address: 218, timer_create: 222, timer_settime: 223,
  timer_gettime: 224, timer_getoverrun: 225, timer_delete: 226, clock_gettime: 228,
  clock_nanosleep: 230, exit_group: 231, tgkill: 234, waitid: 247, openat: 257, set_robust_list: 273,
  get_robust_list: 274, tee: 276, timerfd_create: 283, timerfd_settime: 286, timerfd_gettime: 287, accept4: 288, signalfd4: 289, eventfd2: 290, epoll_create1: 291, dup3: 292, pipe2: 293, epoll_ctl: 233,
  connect: 42, accept: 43, sendto: 44, recvfrom: 45, sendmsg: 46, recvmsg: 47, shutdown: 48, bind: 49, listen: 50, getsockname: 51, getpeername: 52, socketpair: 53, setsockopt: 54, getsockopt: 55, rt_tgsigqueueinfo: 297, prlimit64: 302, process_vm_readv: 310,
  inotify_add_watch: 254, inotify_rm_watch: 255, inotify_init1: 294, open_by_handle_at: 304,
  process_vm_writev: 311, kcmp: 312, seccomp: 317, memfd_create: 319, rseq: 334,
  pidfd_send_signal: 424, pidfd_open: 434, clone3: 435, close_range: 436, pidfd_getfd: 438,
} as const;

export const PTRACE = {
  PEEKDATA: 2, PEEKUSER: 3, POKEDATA: 5, CONT: 7, KILL: 8, DETACH: 17, SYSCALL: 24,
  GETREGS: 12, SETREGS: 13,
  SETOPTIONS: 0x4200, GETEVENTMSG: 0x4201, GETSIGINFO: 0x4202, SETSIGINFO: 0x4203,
  GETREGSET: 0x4204, SETREGSET: 0x4205, SEIZE: 0x4206, INTERRUPT: 0x4207, LISTEN: 0x4208,
  PEEKSIGINFO: 0x4209, GETSIGMASK: 0x420a, SETSIGMASK: 0x420b, SECCOMP_GET_FILTER: 0x420c,
  GET_SYSCALL_INFO: 0x420e, GET_RSEQ_CONFIGURATION: 0x420f,
} as const;

export const PTRACE_O = {
  TRACESYSGOOD: 0x1, TRACEFORK: 0x2, TRACEVFORK: 0x4, TRACECLONE: 0x8, TRACEEXEC: 0x10,
  TRACEVFORKDONE: 0x20, TRACEEXIT: 0x40, TRACESECCOMP: 0x80, EXITKILL: 0x100000,
  SUSPEND_SECCOMP: 0x200000,
} as const;

export const PTRACE_EVENT = {
  FORK: 1, VFORK: 2, CLONE: 3, EXEC: 4, VFORK_DONE: 5, EXIT: 6, SECCOMP: 7, STOP: 128,
} as const;

export const PTRACE_PEEKSIGINFO_SHARED = 1;

/** ELF note types for PTRACE_GETREGSET. */
export const NT = { PRSTATUS: 1, PRFPREG: 2, X86_XSTATE: 0x202 } as const;

export const WAIT = { WNOHANG: 1, WUNTRACED: 2, WEXITED: 4, WCONTINUED: 8, WNOWAIT: 0x01000000, __WALL: 0x40000000 } as const;
export const P_PID = 1;
export const P_PIDFD = 3;

export const SIG = {
  SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGILL: 4, SIGTRAP: 5, SIGABRT: 6, SIGBUS: 7, SIGFPE: 8,
  SIGKILL: 9, SIGUSR1: 10, SIGSEGV: 11, SIGUSR2: 12, SIGPIPE: 13, SIGALRM: 14, SIGTERM: 15,
  SIGSTKFLT: 16, SIGCHLD: 17, SIGCONT: 18, SIGSTOP: 19, SIGTSTP: 20, SIGTTIN: 21, SIGTTOU: 22,
  SIGRTMIN: 32, SIGRTMAX: 64,
} as const;
export const NSIG = 64;

export const PROT = { NONE: 0, READ: 1, WRITE: 2, EXEC: 4 } as const;
export const MAP = {
  SHARED: 0x01, PRIVATE: 0x02, FIXED: 0x10, ANONYMOUS: 0x20, GROWSDOWN: 0x100, DENYWRITE: 0x800,
  EXECUTABLE: 0x1000, LOCKED: 0x2000, NORESERVE: 0x4000, POPULATE: 0x8000, FIXED_NOREPLACE: 0x100000,
} as const;
export const MREMAP = { MAYMOVE: 1, FIXED: 2, DONTUNMAP: 4 } as const;
export const MADV = { DONTNEED: 4, POPULATE_WRITE: 23 } as const;

export const O = {
  RDONLY: 0, WRONLY: 1, RDWR: 2, ACCMODE: 3, CREAT: 0o100, EXCL: 0o200, NOCTTY: 0o400, TRUNC: 0o1000,
  APPEND: 0o2000, NONBLOCK: 0o4000, DSYNC: 0o10000, DIRECT: 0o40000, LARGEFILE: 0o100000,
  DIRECTORY: 0o200000, NOFOLLOW: 0o400000, NOATIME: 0o1000000, CLOEXEC: 0o2000000, PATH: 0o10000000,
} as const;

export const PR = {
  SET_PDEATHSIG: 1, GET_PDEATHSIG: 2, GET_DUMPABLE: 3, SET_DUMPABLE: 4, SET_NAME: 15, GET_NAME: 16,
  GET_SECCOMP: 21, SET_MM: 35, SET_CHILD_SUBREAPER: 36, GET_CHILD_SUBREAPER: 37, GET_THP_DISABLE: 42,
  GET_TID_ADDRESS: 40,
} as const;
export const PR_SET_MM = { MAP: 14, MAP_SIZE: 15 } as const;

export const ARCH = { SET_GS: 0x1001, SET_FS: 0x1002, GET_FS: 0x1003, GET_GS: 0x1004 } as const;

export const ITIMER = { REAL: 0, VIRTUAL: 1, PROF: 2 } as const;
export const RLIMIT_NLIMITS = 16;
export const RLIM_INFINITY = 0xffffffffffffffffn;

export const KCMP = { FILE: 0, VM: 1, FILES: 2, FS: 3, SIGHAND: 4, IO: 5, SYSVSEM: 6, EPOLL_TFD: 7 } as const;

export const CLONE = {
  VM: 0x100, FS: 0x200, FILES: 0x400, SIGHAND: 0x800, PIDFD: 0x1000, PTRACE: 0x2000, VFORK: 0x4000,
  PARENT: 0x8000, THREAD: 0x10000, NEWNS: 0x20000, SYSVSEM: 0x40000, SETTLS: 0x80000,
  PARENT_SETTID: 0x100000, CHILD_CLEARTID: 0x200000, CHILD_SETTID: 0x1000000,
} as const;

export const PAGE_SIZE = 4096;

export const F = { DUPFD: 0, GETFD: 1, SETFD: 2, GETFL: 3, SETFL: 4, DUPFD_CLOEXEC: 1030, SETPIPE_SZ: 1031, GETPIPE_SZ: 1032 } as const;
export const SPLICE_F_NONBLOCK = 2;

/** The syscall instruction followed by int3: what a remote syscall executes. */
export const SYSCALL_INT3 = Buffer.from([0x0f, 0x05, 0xcc]);
export const SYSCALL_INSN_LEN = 2;

/** Kernel-internal restart codes, visible in rax of a task stopped inside a syscall. */
export const ERESTART = { SYS: 512, NOINTR: 513, NOHAND: 514, RESTARTBLOCK: 516 } as const;

/**
 * struct user_regs_struct (arch/x86/include/asm/user_64.h): 27 unsigned longs,
 * in this order. NT_PRSTATUS returns exactly this (216 bytes).
 */
export const USER_REGS_FIELDS = [
  'r15', 'r14', 'r13', 'r12', 'rbp', 'rbx', 'r11', 'r10', 'r9', 'r8', 'rax', 'rcx', 'rdx', 'rsi', 'rdi',
  'orig_rax', 'rip', 'cs', 'eflags', 'rsp', 'ss', 'fs_base', 'gs_base', 'ds', 'es', 'fs', 'gs',
] as const;
export type RegName = (typeof USER_REGS_FIELDS)[number];
export const USER_REGS_SIZE = USER_REGS_FIELDS.length * 8;

/**
 * XSAVE area as returned by NT_X86_XSTATE: the legacy 512-byte FXSAVE region,
 * the 64-byte XSAVE header, then extended components at CPUID-given offsets
 * (the standard format's fixed offsets on x86-64 for the ones we keep).
 */
export const XSAVE = {
  FXSAVE_SIZE: 512,
  HEADER_OFFSET: 512,
  /** XSAVE_HDR: xstate_bv at +0 */
  XSTATE_BV_OFFSET: 512,
  /** In the FXSAVE region, bytes 464..511 are software-reserved; the kernel puts its
   *  sw_reserved (magic1, extended_size, xfeatures, xstate_size) at 464. */
  SW_RESERVED_OFFSET: 464,
  YMM_OFFSET: 576, YMM_SIZE: 256,
  BNDREGS_OFFSET: 960, BNDREGS_SIZE: 64,
  BNDCSR_OFFSET: 1024, BNDCSR_SIZE: 64,
  OPMASK_OFFSET: 1088, OPMASK_SIZE: 64,
  ZMM_H_OFFSET: 1152, ZMM_H_SIZE: 512,
  HI16_ZMM_OFFSET: 1664, HI16_ZMM_SIZE: 1024,
  PKRU_OFFSET: 2688, PKRU_SIZE: 8,
  /** Enough for every component this kernel may report here (2432 seen); 4 KiB is safe. */
  MAX_SIZE: 4096,
} as const;

/** struct __ptrace_peeksiginfo_args { u64 off; u32 flags; s32 nr; } */
export const PEEKSIGINFO_ARGS_SIZE = 16;
export const SIGINFO_SIZE = 128;

/** struct ptrace_rseq_configuration { u64 rseq_abi_pointer; u32 rseq_abi_size; u32 signature; u32 flags; u32 pad; } */
export const RSEQ_CONFIG_SIZE = 24;

/** struct iovec { void *base; size_t len; } */
export const IOVEC_SIZE = 16;

/** struct prctl_mm_map (include/uapi/linux/prctl.h) */
export const PRCTL_MM_MAP = {
  start_code: 0, end_code: 8, start_data: 16, end_data: 24, start_brk: 32, brk: 40, start_stack: 48,
  arg_start: 56, arg_end: 64, env_start: 72, env_end: 80, auxv: 88, auxv_size: 96, exe_fd: 100,
  SIZE: 104,
} as const;

/** struct clone_args (v2, with set_tid). */
export const CLONE_ARGS = {
  flags: 0, pidfd: 8, child_tid: 16, parent_tid: 24, exit_signal: 32, stack: 40, stack_size: 48,
  tls: 56, set_tid: 64, set_tid_size: 72, cgroup: 80, SIZE: 88,
} as const;

/** struct kernel_sigaction on x86-64: handler, flags, restorer, mask (8 bytes each). */
export const KSIGACTION_SIZE = 32;
/** struct itimerval: it_interval{sec,usec}, it_value{sec,usec}. */
export const ITIMERVAL_SIZE = 32;
/** struct rlimit64 */
export const RLIMIT64_SIZE = 16;
/** stack_t: ss_sp(8), ss_flags(4)+pad(4), ss_size(8) */
export const STACK_T_SIZE = 24;
