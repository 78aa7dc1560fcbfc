// File leases (F_SETLEASE), part of file locks: a lease is held through an
// open file description and shown in its fdinfo as "LEASE ACTIVE READ|WRITE"
// or, once another open has started to break it, "LEASE BREAKING" with the
// type it is becoming (F_GETLEASE tells it on every kernel). criu's image:
// file_lock_entry with flag FL_LEASE, type F_RDLCK/F_WRLCK, or the target
// type (F_RDLCK, F_UNLCK) | LEASE_BREAKING.
//
// Restore, in the process holding the fd, before fd owners are set:
// F_SETLEASE (which makes the caller the file's owner: fd-owners puts the
// dumped owner back afterwards). A breaking lease is taken as it was before
// the break (write, or read when becoming unlocked through a read-only fd)
// and broken again by an open of ours that does not wait; the notification
// signal this sends the task is taken out of its queue at once: the program
// had its own before the dump and must not see a second one (criu leaves it,
// and zdtm's file_lease02-04 then fail with "Unexpected fd"). The kernel's
// break timer (lease-break-time) starts again from the restore.
import * as fs from 'node:fs';
import { abi } from '../sys';
import { inBuf } from '../compel/remote';
import { LEASE_BREAKING } from '../images/criu';
import { StasisError, ErrorCodes } from '../errors';
import type { Msg } from '../images/schema';
import type { TaskRestore } from '../unit/restore-ctx';
import type { LockLine } from './file-locks';

const { F, O, LOCK_TYPE, SIG, ERRNO, NSIG, TIMESPEC } = abi;
type Lock = Msg<'file_lock_entry'>;

const TYPE_NAMES: Record<number, string> = { [LOCK_TYPE.RDLCK]: 'read', [LOCK_TYPE.WRLCK]: 'write', [LOCK_TYPE.UNLCK]: 'no' };

/** The image type of a lease line of fd `fd` of `pid`; `target()`: F_GETLEASE of that fd. */
export function leaseType(l: LockLine, pid: number, fd: number, target?: () => number): number {
  if (l.state === 'ACTIVE') return l.type === 'WRITE' ? LOCK_TYPE.WRLCK : LOCK_TYPE.RDLCK;
  if (l.state === 'BREAKING' && target) {
    const t = target();
    if (t === LOCK_TYPE.RDLCK || t === LOCK_TYPE.UNLCK) return t | LEASE_BREAKING;
  }
  throw new StasisError(ErrorCodes.UNSUPPORTED, `fd ${fd} of pid ${pid} holds a file lease in state ${l.state} (${l.type}) on inode ${l.ino}; not supported`);
}

/** A lease type of an image, checked: undefined if fine, else what is wrong. */
export function badLeaseType(type: number): string | undefined {
  const target = type & ~LEASE_BREAKING;
  if (type & LEASE_BREAKING) return target === LOCK_TYPE.RDLCK || target === LOCK_TYPE.UNLCK ? undefined : `a breaking lease becoming type ${target}`;
  return type === LOCK_TYPE.RDLCK || type === LOCK_TYPE.WRLCK ? undefined : `a lease of type ${type}`;
}

function setLease(tr: TaskRestore, fd: number, type: number): void {
  const r = tr.task.callRaw('fcntl', fd, F.SETLEASE, type);
  if (r === 0n) return;
  const why = r === BigInt(-ERRNO.EAGAIN) ? ': the file is open elsewhere in a way the lease forbids' : ` (errno ${-r})`;
  throw new StasisError(ErrorCodes.RESTORE_FAILED, `cannot take the ${TYPE_NAMES[type]} lease of fd ${fd} of pid ${tr.img.pid} again${why}`);
}

/** Start breaking the lease on fd `fd` of the task, towards `target`, without waiting. */
function breakLease(tr: TaskRestore, fd: number, target: number): void {
  // A write open breaks any lease; a read open turns a write lease into a read one.
  const flags = (target === LOCK_TYPE.UNLCK ? O.WRONLY : O.RDONLY) | O.NONBLOCK | O.CLOEXEC;
  let opened: number | undefined;
  try {
    opened = fs.openSync(`/proc/${tr.task.pid}/fd/${fd}`, flags);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EAGAIN' && (e as NodeJS.ErrnoException).code !== 'EWOULDBLOCK') throw e;
  }
  if (opened !== undefined) {
    fs.closeSync(opened);
    throw new StasisError(ErrorCodes.RESTORE_FAILED, `the lease of fd ${fd} of pid ${tr.img.pid} did not start breaking`);
  }
}

/** Take out of the task's queue the signal our break sent it (signals stay blocked while we restore). */
function dropBreakSignal(tr: TaskRestore, fd: number): void {
  const signum = tr.task.callNum('fcntl', fd, F.GETSIG, 0) || SIG.SIGIO;
  const set = Buffer.alloc(NSIG / 8);
  set.writeBigUInt64LE(1n << BigInt(signum - 1));
  const r = tr.task.callRaw('rt_sigtimedwait', inBuf(set), 0, inBuf(TIMESPEC.encode({ sec: 0, nsec: 0 })), NSIG / 8);
  // None queued (the kernel did not find the owner allowed to get it): nothing to undo.
  if (r < 0n && r !== BigInt(-ERRNO.EAGAIN)) throw new StasisError(ErrorCodes.RESTORE_FAILED, `rt_sigtimedwait in pid ${tr.img.pid}: errno ${-r}`);
}

export function restoreLease(tr: TaskRestore, l: Lock): void {
  if (!(l.type & LEASE_BREAKING)) { setLease(tr, l.fd, l.type); return; }
  const target = l.type & ~LEASE_BREAKING;
  const readOnly = (tr.task.callNum('fcntl', l.fd, F.GETFL, 0) & O.ACCMODE) === O.RDONLY;
  setLease(tr, l.fd, target === LOCK_TYPE.UNLCK && readOnly ? LOCK_TYPE.RDLCK : LOCK_TYPE.WRLCK);
  breakLease(tr, l.fd, target);
  dropBreakSignal(tr, l.fd);
  const now = tr.task.callNum('fcntl', l.fd, F.GETLEASE, 0);
  if (now !== target) throw new StasisError(ErrorCodes.RESTORE_FAILED, `the lease of fd ${l.fd} of pid ${tr.img.pid} is becoming ${TYPE_NAMES[now] ?? now}, not ${TYPE_NAMES[target]}`);
}
