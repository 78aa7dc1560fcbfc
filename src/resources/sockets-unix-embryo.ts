// Unix stream and seqpacket connections still in a listener's accept queue
// ("embryos": the server end exists, no fd has it yet); datagram sockets
// others are connected to; sockets that have queued data but no peer to
// send it again (the peer closed, or a datagram socket).
//
// Dump: the listener's queue order is sock_diag's UNIX_DIAG_ICONS (the
// client inodes, 0 for a client already closed); each embryo becomes an
// entry of files.img referenced by no fd, with embryo_of = the listener's
// inode, in queue order. An embryo's queued data (what its client sent) can
// only be read once accepted: stasis accepts the listener's whole queue on
// its copy of the listener, after every other unit has read and checked its
// state, and only when the tree is to be killed after the dump (never with
// --leave-running or --lazy-pages). The kernel cannot put a connection back
// in the queue: should the dump still fail after that (writing the images),
// the program finds those connections gone. A client's entry has the
// listener as its peer (as CRIU writes an in-flight connection). Files in
// flight (SCM_RIGHTS) in an embryo's queue are refused before anything is
// accepted (the listener's fdinfo counts them: scm_fds): the files they may
// be were read by then. Queues are dumped and refilled as any other unix
// socket's (scm-rights.ts: dumpUnixQueue, sendQueued).
//
// Restore: whichever task first needs the listener or one of its clients
// makes them all: bind, listen, then one connect per embryo in queue order
// from a socket that is the client (bound to its name first) or a stand-in
// closed afterwards; the embryo's data is sent through it, then its
// shutdown. Each is parked there for its owner. A datagram socket and the
// ones connected to it (its senders) are made together likewise.
import * as fs from 'node:fs';
import { sysTry, abi } from '../sys';
import { inBuf, outBuf } from '../compel/remote';
import { StasisError, ErrorCodes, errnoName } from '../errors';
import { FD_TYPES, NO_FOWN, SK_SHUTDOWN } from '../images/criu';
import type { Msg } from '../images/schema';
import type { DumpCtx } from '../unit/dump-ctx';
import type { RestoreCtx, TaskRestore } from '../unit/restore-ctx';
import { grabSocket, restoreSockOpts, restoreShutdown } from './sockopts';
import { skQueuesUnit } from './sockqueue';
import { dumpUnixQueue, sendQueued } from './scm-rights';
import { readFdInfo } from '../proc/proc';
import { park, fetchFd, fileId } from './files';
import { sockaddrUn, bindName } from './sockets-unix-names';

const { AF, SOCK, TCP_STATE: STATE, O, readI32s } = abi;
type Usk = Msg<'unix_sk_entry'>;

export const NO_OPTS = { so_sndbuf: 0, so_rcvbuf: 0, so_snd_tmo_sec: 0n, so_snd_tmo_usec: 0n, so_rcv_tmo_sec: 0n, so_rcv_tmo_usec: 0n };

/** A dumped unix socket: where it is, its peer (a listener for a connection not yet accepted). */
export interface DumpedUsk { pid: number; fd: number; peer: number; type: number; wq: number; shutdown: number; name: Buffer; inflight: boolean }
/** A listener with connections not yet accepted: their clients' inodes in queue order (0: closed). */
export interface Listener { ino: number; pid: number; fd: number; type: number; name: Buffer; icons: number[] }

/** Everything restore knows of unix sockets: by inode, and the embryos of each listener in queue order. */
export interface UnixLoaded {
  byIno: Map<number, Usk>; embryos: Map<number, Usk[]>;
  /** Datagram sockets connected to one not connected back, by the inode of that one. */
  senders: Map<number, Usk[]>;
}
/** Sockets made by one task for another (both ends of pairs, listeners and their clients), by inode. */
export type Made = Map<number, { pid: number; fd: number }>;

/** The embryo's shutdown, as its client's makes it: a client closed shut it both ways. */
function mirrored(client: DumpedUsk | undefined): number {
  if (!client) return SK_SHUTDOWN.BOTH;
  return (client.shutdown & SK_SHUTDOWN.READ ? SK_SHUTDOWN.WRITE : 0) | (client.shutdown & SK_SHUTDOWN.WRITE ? SK_SHUTDOWN.READ : 0);
}

/** An embryo's data can only be read by accepting it: needed when its client sent some, or is gone. */
function needsAccept(l: Listener, socks: Map<number, DumpedUsk>): boolean {
  return l.icons.some((c) => c === 0 || socks.get(c)!.wq > 0);
}

/** What cannot be carried is refused before anything is accepted (unix-peers runs first). */
export function checkListeners(ctx: DumpCtx, listeners: Listener[], socks: Map<number, DumpedUsk>, nameOf: (l: Listener) => string): void {
  for (const l of listeners) {
    const what = `fd ${l.fd} of pid ${l.pid}: listening unix socket ${nameOf(l)}`;
    const outside = l.icons.find((c) => c !== 0 && !socks.has(c));
    if (outside !== undefined) throw new StasisError(ErrorCodes.UNSUPPORTED, `${what} has a connection not yet accepted from socket ${outside}, outside the dumped tree; not supported`);
    // A listener's fdinfo counts the files in flight in its embryos' queues:
    // they would be dumped after the files they may be (pipes, ...) were read.
    const inFlight = Number(readFdInfo(l.pid, l.fd).extra.get('scm_fds') ?? 0);
    if (inFlight) throw new StasisError(ErrorCodes.UNSUPPORTED, `${what} has connection(s) not yet accepted whose queues hold ${inFlight} file(s) in flight (SCM_RIGHTS); not supported`);
    // The tree may run on after these (a lazy transfer that breaks off lets it go).
    const goesOn = ctx.opts.leaveRunning ? '--leave-running' : ctx.opts.lazyPages ? '--lazy-pages' : undefined;
    if (goesOn && needsAccept(l, socks)) {
      throw new StasisError(ErrorCodes.UNSUPPORTED, `${what} has ${l.icons.length} connection(s) not yet accepted holding data (or whose client closed): reading it takes accepting them, not done with ${goesOn}`);
    }
  }
}

/**
 * The embryos of every listener, in queue order, as entries of files.img
 * (no fd has them); their queued data when it must be read.
 */
export function dumpEmbryos(ctx: DumpCtx, listeners: Listener[], socks: Map<number, DumpedUsk>): void {
  for (const l of listeners) {
    const s = needsAccept(l, socks) ? grabSocket(l.pid, l.fd) : undefined;
    try {
      l.icons.forEach((client, i) => {
        const what = `fd ${l.fd} of pid ${l.pid}: connection ${i + 1} not yet accepted by the listener`;
        const a = s === undefined ? undefined : accepted(s, what);
        try {
          const id = fileId(ctx, `unix-embryo:${l.ino}:${i}`, (fid) => ({
            type: FD_TYPES.UNIXSK, id: fid,
            usk: {
              id: fid, ino: a === undefined ? 0 : fs.fstatSync(a).ino, type: l.type, state: STATE.ESTABLISHED, flags: O.RDWR, uflags: 0, backlog: 0, peer: client,
              fown: NO_FOWN, opts: NO_OPTS, name: l.name, shutdown: mirrored(socks.get(client)), embryo_of: l.ino,
            },
          }));
          // Shut for reading (its client shut for writing, or closed), a seqpacket queue ends with end of file.
          const endAtZero = l.type === SOCK.SEQPACKET && (mirrored(socks.get(client)) & SK_SHUTDOWN.READ) !== 0;
          if (a !== undefined) dumpUnixQueue(ctx, l.pid, id, a, l.type, what, endAtZero);
        } finally {
          if (a !== undefined) sysTry('close', a);
        }
      });
    } finally {
      if (s !== undefined) sysTry('close', s);
    }
  }
}

/**
 * The next connection of the listener (our copy `s`), accepted to peek its
 * data. It is lost to the program: only done once the tree is to be killed
 * after the dump (checkListeners).
 */
function accepted(s: number, what: string): number {
  const a = sysTry('accept4', s, 0, 0, SOCK.CLOEXEC | SOCK.NONBLOCK);
  if (a < 0) throw new StasisError(ErrorCodes.UNSUPPORTED, `${what}: accept failed: ${errnoName(-a)}`);
  return a;
}

/** Refill the queue of file `id` through `via` (an fd of the task), as its peer sent it, files in flight included. */
export function refill(ctx: RestoreCtx, tr: TaskRestore, via: number, id: number): void {
  const queued = ctx.loaded(skQueuesUnit).get(id) ?? [];
  if (!queued.length) return;
  const s = grabSocket(tr.task.pid, via);
  try { sendQueued(ctx, tr, s, queued); } finally { sysTry('close', s); }
}

/**
 * A socket of no pair, bound to its name: one end of a socketpair when it
 * has data to get back or is a connection whose peer closed
 * (socketWithQueue). `done` once others connected to its name.
 */
export function makeSocket(ctx: RestoreCtx, tr: TaskRestore, e: Usk): { fd: number; done: () => void } {
  const t = tr.task;
  const orphan = e.state === STATE.ESTABLISHED && e.type !== SOCK.DGRAM && !e.peer;
  let fd: number;
  if (orphan || ctx.loaded(skQueuesUnit).get(e.id)?.length) fd = socketWithQueue(ctx, tr, e);
  else {
    fd = t.callNum('socket', AF.UNIX, e.type | SOCK.CLOEXEC, 0);
    restoreSockOpts(t, fd, e.opts);
  }
  return { fd, done: bindName(ctx, t, fd, e) };
}

/**
 * The listener `l` and its embryos, made in this task: each embryo's client
 * (or a stand-in, closed after) connects in queue order and sends the
 * embryo's data. The listener and the clients are parked in `made`.
 */
export function makeListener(ctx: RestoreCtx, tr: TaskRestore, l: Usk, un: UnixLoaded, made: Made): void {
  const t = tr.task;
  const { fd, done } = makeSocket(ctx, tr, l);
  t.call('listen', fd, l.backlog);
  restoreShutdown(t, fd, l.shutdown, `unix socket ${l.ino}`);
  made.set(l.ino, { pid: tr.img.pid, fd: park(ctx, tr, fd) });
  const to = sockaddrUn(l.name);
  try {
    for (const e of un.embryos.get(l.ino) ?? []) {
      const client = e.peer ? un.byIno.get(e.peer) : undefined;
      const c = client ? makeSocket(ctx, tr, client) : { fd: t.callNum('socket', AF.UNIX, l.type | SOCK.CLOEXEC, 0), done: () => {} };
      try { t.call('connect', c.fd, inBuf(to), to.length); } finally { c.done(); }
      refill(ctx, tr, c.fd, e.id);
      if (!client) { t.call('close', c.fd); continue; }
      restoreShutdown(t, c.fd, client.shutdown, `unix socket ${client.ino}`);
      made.set(client.ino, { pid: tr.img.pid, fd: park(ctx, tr, c.fd) });
    }
  } finally {
    done();
  }
}

/**
 * A datagram socket others are connected to (they are not its peers): made
 * here with every such sender, connected to its name in turn; all parked in
 * `made`.
 */
export function makeReceiver(ctx: RestoreCtx, tr: TaskRestore, r: Usk, un: UnixLoaded, made: Made): void {
  const t = tr.task;
  const { fd, done } = makeSocket(ctx, tr, r);
  const to = sockaddrUn(r.name);
  try {
    for (const s of un.senders.get(r.ino) ?? []) {
      const c = makeSocket(ctx, tr, s);
      try { t.call('connect', c.fd, inBuf(to), to.length); } finally { c.done(); }
      restoreShutdown(t, c.fd, s.shutdown, `unix socket ${s.ino}`);
      made.set(s.ino, { pid: tr.img.pid, fd: park(ctx, tr, c.fd) });
    }
  } finally {
    done();
  }
  restoreShutdown(t, fd, r.shutdown, `unix socket ${r.ino}`);
  made.set(r.ino, { pid: tr.img.pid, fd: park(ctx, tr, fd) });
}

/** The fd `ino` was made as (by this task or another), as an fd of this task. */
export function takeMade(tr: TaskRestore, made: Made, ino: number): number {
  const have = made.get(ino)!;
  return have.pid === tr.img.pid ? tr.task.callNum('dup', have.fd) : fetchFd(tr.task, have.pid, have.fd);
}

/**
 * A socket with queued data and no peer to send it again: a stream or
 * seqpacket end whose peer closed (shut both ways), or a datagram socket
 * (any sender). It is made as one end of a socketpair, a datagram end
 * disconnected first (others may then connect to it); the data is sent by
 * the other end, which is closed then, as the peer was.
 */
function socketWithQueue(ctx: RestoreCtx, tr: TaskRestore, e: Usk): number {
  const t = tr.task;
  const ends = outBuf(8);
  t.call('socketpair', AF.UNIX, e.type | SOCK.CLOEXEC, 0, ends);
  const [fd, other] = readI32s(ends.data, 2);
  if (e.type === SOCK.DGRAM) {
    const unspec = Buffer.alloc(2); // connect to AF_UNSPEC: the socket's peer is dropped
    unspec.writeUInt16LE(AF.UNSPEC, 0);
    t.call('connect', fd, inBuf(unspec), unspec.length);
  }
  restoreSockOpts(t, fd, e.opts);
  refill(ctx, tr, other, e.id);
  t.call('close', other);
  return fd;
}
