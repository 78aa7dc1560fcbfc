// Signals, sigaction flags, sigevent notification kinds.
import { struct } from './struct';
export const SIG = {
  SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGILL: 4, SIGTRAP: 5, SIGABRT: 6, SIGBUS: 7, SIGFPE: 8,
  SIGKILL: 9, SIGUSR1: 10, SIGSEGV: 11, SIGUSR2: 12, SIGPIPE: 13, SIGALRM: 14, SIGTERM: 15,
  SIGSTKFLT: 16, SIGCHLD: 17, SIGCONT: 18, SIGSTOP: 19, SIGTSTP: 20, SIGTTIN: 21, SIGTTOU: 22,
  SIGURG: 23, SIGXCPU: 24, SIGXFSZ: 25, SIGVTALRM: 26, SIGPROF: 27, SIGWINCH: 28, SIGIO: 29, SIGPWR: 30, SIGSYS: 31,
  SIGRTMIN: 32, SIGRTMAX: 64,
} as const;
export const NSIG = 64;
export const SIG_DFL = 0n;
export const SIG_IGN = 1n;
export const SA = { SIGINFO: 4, ONSTACK: 0x08000000, RESTART: 0x10000000, NODEFER: 0x40000000, RESETHAND: 0x80000000, RESTORER: 0x04000000 } as const;
export const SS_DISABLE = 2;
/** rt_sigprocmask's `how`. */
export const SIG_HOW = { BLOCK: 0, UNBLOCK: 1, SETMASK: 2 } as const;
export const SIGEV = { SIGNAL: 0, NONE: 1, THREAD: 2, THREAD_ID: 4 } as const;
/** Every signal, as a 64-bit mask. */
export const ALL_SIGNALS = 0xffffffffffffffffn;
export function sigBit(sig: number): bigint { return 1n << BigInt(sig - 1); }

/** The start of a siginfo_t as waitid() fills it for a child (SIGCHLD fields); the whole is SIGINFO_SIZE. */
export const SIGINFO_CHLD = struct({ signo: 'i32', errno: 'i32', code: 'i32', pad: 'i32', pid: 'i32', uid: 'u32', status: 'i32' });
/** si_code of SIGCHLD. */
export const CLD = { EXITED: 1, KILLED: 2, DUMPED: 3, TRAPPED: 4, STOPPED: 5, CONTINUED: 6 } as const;
