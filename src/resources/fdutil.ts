// Moving fds between tasks under restore.
import { abi } from '../sys';
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
