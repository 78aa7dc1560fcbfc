// Moving fds between tasks under restore, and filling them from outside.
import * as fs from 'node:fs';
import { abi } from '../sys';
import { StasisError, ErrorCodes } from '../errors';
import type { RestoreCtx, TaskRestore } from '../restore/context';
import type { RemoteTask } from '../restore/remote';

/** Copy fd `fd` of process `from` into the task (same open file description). */
export function fetchFd(t: RemoteTask, from: number, fd: number): number {
  const pidfd = Number(t.call('pidfd_open', from, 0));
  try {
    return Number(t.call('pidfd_getfd', pidfd, fd, 0));
  } finally {
    t.call('close', pidfd);
  }
}

/**
 * Park an fd above every fd number the task will use (closed after every
 * process has its fds, see closeParked); returns the new number.
 */
export function park(ctx: RestoreCtx, tr: TaskRestore, fd: number): number {
  const above = tr.img.fdinfo.reduce((m, f) => Math.max(m, f.fd), 2) + 1;
  const parked = Number(tr.task.call('fcntl', fd, abi.F.DUPFD_CLOEXEC, above));
  tr.task.call('close', fd);
  ctx.parked.push({ pid: tr.img.pid, fd: parked });
  return parked;
}

/**
 * Queue `data` into the pipe or FIFO behind the task's fd, from outside,
 * through a writer of our own on the same pipe.
 */
export function fillPipe(pid: number, fd: number, data: Buffer, what: string): void {
  const w = fs.openSync(`/proc/${pid}/fd/${fd}`, abi.O.WRONLY | abi.O.NONBLOCK);
  try {
    const n = fs.writeSync(w, data);
    if (n !== data.length) throw new StasisError(ErrorCodes.RESTORE_FAILED, `${what}: wrote ${n} of ${data.length} queued bytes`);
  } finally {
    fs.closeSync(w);
  }
}
