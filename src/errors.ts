// Errors carry a stable `code` (for programs and tests) and, when they come
// from the kernel, the syscall and errno behind them.
import { constants } from 'node:os';

const errnoNames: Map<number, string> = new Map(
  Object.entries(constants.errno).map(([name, value]) => [value as number, name]),
);

export function errnoName(errno: number): string {
  return errnoNames.get(errno) ?? `E${errno}`;
}

export class StasisError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'StasisError';
    this.code = code;
  }
}

/** A failed system call: `code` is the errno name (ESRCH, EPERM...). */
export class SyscallError extends StasisError {
  readonly syscall: string;
  readonly errno: number;
  constructor(syscall: string, errno: number, detail?: string) {
    const name = errnoName(errno);
    super(name, `${syscall}${detail ? ` (${detail})` : ''}: ${name}`);
    this.name = 'SyscallError';
    this.syscall = syscall;
    this.errno = errno;
  }
}

/**
 * The raw result of a system call run inside a task (-errno on failure):
 * returned as is, or a SyscallError named `remote NAME`.
 */
export function remoteResult(r: bigint, name: string, where: string): bigint {
  if (r < 0n && r > -4096n) throw new SyscallError(`remote ${name}`, Number(-r), where);
  return r;
}

export const ErrorCodes = {
  NO_SUCH_PROCESS: 'STASIS_NO_SUCH_PROCESS',
  ZOMBIE: 'STASIS_ZOMBIE',
  KERNEL_THREAD: 'STASIS_KERNEL_THREAD',
  SELF: 'STASIS_SELF',
  NOT_PERMITTED: 'STASIS_NOT_PERMITTED',
  SEIZE_FAILED: 'STASIS_SEIZE_FAILED',
  TASK_DIED: 'STASIS_TASK_DIED',
  UNEXPECTED_STOP: 'STASIS_UNEXPECTED_STOP',
  PARASITE: 'STASIS_PARASITE',
  UNSUPPORTED: 'STASIS_UNSUPPORTED',
  BAD_IMAGE: 'STASIS_BAD_IMAGE',
  INJECTED_FAILURE: 'STASIS_INJECTED_FAILURE',
  RESTORE_FAILED: 'STASIS_RESTORE_FAILED',
  PID_TAKEN: 'STASIS_PID_TAKEN',
  FILE_CHANGED: 'STASIS_FILE_CHANGED',
  USAGE: 'STASIS_USAGE',
  /** Reading or writing a file failed (the message names it and the cause). */
  IO_ERROR: 'STASIS_IO_ERROR',
  NO_SPACE: 'STASIS_NO_SPACE',
  /** The images directory is in use by another stasis. */
  BUSY: 'STASIS_BUSY',
  /** An images directory or file not to be trusted (owner, mode, links). */
  UNSAFE: 'STASIS_UNSAFE',
  /** Image contents do not match their digest. */
  CORRUPT: 'STASIS_CORRUPT',
  /** The network lock of dumped TCP connections could not be taken or removed (nft, iptables). */
  NETWORK_LOCK: 'STASIS_NETWORK_LOCK',
  INTERNAL: 'STASIS_INTERNAL',
  /** criu swrk: the client sent a malformed or unexpected message, reported a failure, or went away. */
  RPC: 'STASIS_RPC',
} as const;
export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

/**
 * Failure injection for tests (STASIS_FAIL_AT): `failAt` is "point",
 * "point:kill" or "point:stop"; at that point fail with an error, SIGKILL
 * ourselves, or SIGSTOP ourselves (the test holds us there: races made certain).
 */
export function injectFailure(failAt: string | undefined, point: string, what: string): void {
  if (!failAt) return;
  const [where, how] = failAt.split(':');
  if (where !== point) return;
  if (how === 'kill') process.kill(process.pid, 'SIGKILL');
  if (how === 'stop') { process.kill(process.pid, 'SIGSTOP'); return; }
  throw new StasisError(ErrorCodes.INJECTED_FAILURE, `failure injected at ${what} ${point}`);
}
