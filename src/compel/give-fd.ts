// One of our fds into a task being restored. pidfd_getfd from the task needs
// a pidfd of ours, which a task in another pid namespace cannot open (we are
// not in it). So the task makes a socketpair, we take one end with
// pidfd_getfd (we can see the task), send our fd through it (SCM_RIGHTS), and
// the task receives it from the other end: the same open file description.
import { abi, sendPacket, sysTry, grabFd } from '../sys';
import { readI32s } from '../sys/abi/struct';
import { StasisError, ErrorCodes } from '../errors';
import { outBuf, linked, type RemoteTask } from './remote';

const { AF, SOCK, MSG, IOVEC, MSGHDR, CMSGHDR, SOL, SCM_RIGHTS } = abi;

/**
 * A file task `t` opens by a system call (`userfaultfd`: it binds to the
 * caller's mm), ours only: our copy (pidfd_getfd), its fd in the task closed.
 * A negative number: the call's -errno.
 */
export function openedInTask(t: RemoteTask, ...call: Parameters<RemoteTask['callRaw']>): number {
  const r = Number(t.callRaw(...call));
  if (r < 0) return r;
  try { return grabFd(t.pid, r); } finally { t.call('close', r); }
}

/** A new fd in task `t` for our fd `ours` (close-on-exec: the caller places it). */
export function giveFd(t: RemoteTask, ours: number): number {
  const pair = outBuf(8);
  t.call('socketpair', AF.UNIX, SOCK.DGRAM | SOCK.CLOEXEC, 0, pair);
  const [a, b] = readI32s(pair.data, 2);
  try {
    const end = grabFd(t.pid, b);
    try {
      const r = sendPacket(end, Buffer.from([0]), [ours]);
      if (r !== 1) throw new StasisError(ErrorCodes.RESTORE_FAILED, `cannot pass fd ${ours} to pid ${t.pid}: sendmsg ${r}`);
    } finally {
      sysTry('close', end);
    }
    const byte = outBuf(1);
    const control = outBuf(CMSGHDR.size + 8);
    const iov = linked(IOVEC.size, [byte], (at) => IOVEC.encode({ base: at(byte), len: 1 }));
    const msg = linked(MSGHDR.size, [iov, control], (at) => MSGHDR.encode({ iov: at(iov), iovlen: 1, control: at(control), controllen: control.len }));
    t.call('recvmsg', a, msg, MSG.CMSG_CLOEXEC);
    const h = CMSGHDR.decode(control.data);
    if (h.level !== SOL.SOCKET || h.type !== SCM_RIGHTS) throw new StasisError(ErrorCodes.RESTORE_FAILED, `pid ${t.pid} received no fd for our fd ${ours}`);
    return control.data.readInt32LE(CMSGHDR.size);
  } finally {
    t.call('close', a);
    t.call('close', b);
  }
}
