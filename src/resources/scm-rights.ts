// Files in flight: passed in a unix socket's message (SCM_RIGHTS) and not yet
// received. The peek of the queue installs copies of them in our process;
// each is dumped as an ordinary file entry (files.img) that no fd names, and
// the queued message lists their ids (sk_packet_entry.scm). Our copies stay
// open until files.img is written: another fd of the tree may be the very
// same open file (kcmp), and shares its entry then. At restore each file is
// made in the task that refills the queue (kept there above its fd table),
// then sent again with the message's bytes, in the queue's order.
import { sys, sysTry, addressOf, abi } from '../sys';
import { StasisError, ErrorCodes } from '../errors';
import { defineUnit } from '../unit/unit';
import type { DumpCtx } from '../unit/dump-ctx';
import type { RestoreCtx, TaskRestore } from '../unit/restore-ctx';
import { peekQueue, sendAll, sendWithFds, skQueuesUnit, type Packet } from './sockqueue';
import { dumpFd, holdFile } from './files';
import { grabSocket } from './sockopts';

const { SOCK, F, F_OWNER_EX } = abi;

interface DumpState {
  /** Our copies of the files in flight, closed once files.img is written. */
  fds: number[];
  /** Set while a file in flight is dumped: a socket among them holding files in flight itself is refused. */
  inner: boolean;
}

/**
 * The queue of a unix socket (our fd `s`, file id `id`), files in flight
 * included, into sk-queues.img. A pair's queues are sent again through the
 * other end at restore; a socket with no peer is made as one end of a pair
 * for that (sockets-unix-embryo.ts).
 */
export function dumpUnixQueue(ctx: DumpCtx, pid: number, id: number, s: number, type: number, what: string, endAtZero: boolean): void {
  const st = ctx.state(scmRightsUnit);
  const packets = peekQueue(s, type === SOCK.STREAM, what, endAtZero);
  for (const p of packets) st.fds.push(...p.fds ?? []);
  const n = packets.reduce((k, p) => k + (p.fds?.length ?? 0), 0);
  if (n && st.inner) throw new StasisError(ErrorCodes.UNSUPPORTED, `a unix socket in flight whose own queue holds ${n} file(s) in flight (SCM_RIGHTS) too; not supported`);
  const queues = ctx.state(skQueuesUnit);
  const was = st.inner;
  st.inner = true;
  try {
    for (const p of packets) queues.push({ id, packet: { data: p.data, files: p.fds?.map((fd) => flightFileId(ctx, pid, fd, what)) } });
  } finally {
    st.inner = was;
  }
}

/** The file id of a file in flight (our fd `fd`; sent to a socket of `pid`), dumped like any other file. */
function flightFileId(ctx: DumpCtx, pid: number, fd: number, what: string): number {
  const ex = Buffer.alloc(F_OWNER_EX.size);
  sys('fcntl', fd, F.GETOWN_EX, addressOf(ex));
  if (F_OWNER_EX.decode(ex).pid || sys('fcntl', fd, F.GETSIG, 0)) {
    throw new StasisError(ErrorCodes.UNSUPPORTED, `${what}: a file in flight in its queue (SCM_RIGHTS) has an owner for SIGIO (F_SETOWN, F_SETSIG); not supported`);
  }
  try {
    return dumpFd(ctx, process.pid, fd, undefined, pid).id;
  } catch (e) {
    if (!(e instanceof StasisError)) throw e;
    throw new StasisError(e.code, `${what}: a file in flight in its queue (SCM_RIGHTS): ${e.message}`);
  }
}

/**
 * Refill a queue through our fd `s` (the sending end), message by message:
 * the files a message carries are made (or shared) in the task first.
 */
export function sendQueued(ctx: RestoreCtx, tr: TaskRestore, s: number, queued: readonly Packet[]): void {
  for (const q of queued) {
    if (!q.files?.length) { sendAll(s, q.data); continue; }
    const ours: number[] = [];
    try {
      for (const id of q.files) ours.push(grabSocket(tr.task.pid, holdFile(ctx, tr, id)));
      sendWithFds(s, q.data, ours);
    } finally {
      for (const x of ours) sysTry('close', x);
    }
  }
}

export const scmRightsUnit = defineUnit({
  name: 'scm-rights',
  dumpState: (): DumpState => ({ fds: [], inner: false }),
  dumpPhases: [{
    name: 'scm-rights-close', after: ['write-files'],
    once: (_ctx, st) => { for (const fd of st.fds.splice(0)) sysTry('close', fd); },
  }],
});
