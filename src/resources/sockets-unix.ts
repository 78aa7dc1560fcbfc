// Unix sockets: stream, datagram and seqpacket; listening (path or abstract
// name, backlog), bound, and connected pairs whose both ends are in the tree,
// with their queued data. A connected pair is re-created with socketpair()
// (an end that bound a path itself is bound to it again; the name an
// accepted socket shares with its listener is not kept). With
// --ext-unix-sk a datagram socket connected to a named peer outside the tree
// (syslog's /dev/log, say) is connected to that name again. Connections not
// yet accepted, datagram sockets others connect to, and sockets with data
// but no peer: sockets-unix-embryo.ts; socket files and names whose file is
// gone: sockets-unix-names.ts.
import { sysTry, abi } from '../sys';
import { inBuf, outBuf } from '../compel/remote';
import { StasisError, ErrorCodes } from '../errors';
import { FD_TYPES, NO_FOWN, USK, SK_SHUTDOWN } from '../images/criu';
import type { Msg } from '../images/schema';
import { defineFileUnit } from '../unit/unit';
import type { DumpCtx } from '../unit/dump-ctx';
import type { RestoreCtx, TaskRestore } from '../unit/restore-ctx';
import { unixSockets, type UnixDiag } from '../proc/sockdiag';
import { inNamespaceOf } from '../proc/ns';
import { grabSocket, getInt, dumpSockOpts, restoreSockOpts, restoreShutdown } from './sockopts';
import { skQueuesUnit } from './sockqueue';
import { dumpUnixQueue } from './scm-rights';
import { park, fileId, filesUnit } from './files';
import {
  NO_OPTS, checkListeners, dumpEmbryos, makeSocket, makeListener, makeReceiver, takeMade, refill,
  type DumpedUsk, type Listener, type UnixLoaded, type Made,
} from './sockets-unix-embryo';
import { sockaddrUn, bindName, dumpNameState } from './sockets-unix-names';

const { AF, SOCK, SOL, SO, TCP_STATE: STATE, O, F, readI32s } = abi;
type Usk = Msg<'unix_sk_entry'>;

interface DumpState {
  diag?: Map<number, UnixDiag>;
  /** Unix sockets dumped, by inode, with their peer inode: peers must be in the tree too. */
  socks: Map<number, DumpedUsk>;
  /** Listeners with connections not yet accepted. */
  listeners: Listener[];
}

/** The unix sockets of pid's network namespace (the tree's: nested ones are refused). */
function diagOf(st: DumpState, pid: number): Map<number, UnixDiag> { return (st.diag ??= inNamespaceOf(pid, 'net', unixSockets)); }

function isUnix(pid: number, fd: number): boolean {
  const s = grabSocket(pid, fd);
  try { return getInt(s, SOL.SOCKET, SO.DOMAIN) === AF.UNIX; } finally { sysTry('close', s); }
}

/** The listener whose accept queue holds the client `ino`, if any. */
function listenerOf(st: DumpState, pid: number, ino: number): UnixDiag | undefined {
  for (const l of diagOf(st, pid).values()) if (l.icons.includes(ino)) return l;
  return undefined;
}

export function printableName(name: Buffer): string {
  const text = name.length && name[0] === 0 ? `@${name.subarray(1).toString()}` : name.toString();
  // Abstract names may hold any byte (often trailing NULs): escaped, to stay one line.
  return text.replace(/[\x00-\x1f\x7f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

/**
 * A unix socket whose peer is outside the tree cannot be re-connected to that
 * very socket. With --ext-unix-sk a datagram socket connected to a named peer
 * is: the peer goes into files.img as an external entry (uflags USK_EXTERN),
 * referenced by no fd.
 */
function checkPeers(ctx: DumpCtx, st: DumpState): void {
  for (const [ino, u] of st.socks) {
    if (!u.peer) continue;
    const inTree = st.socks.get(u.peer);
    if (u.inflight && !inTree) {
      throw new StasisError(ErrorCodes.UNSUPPORTED, `fd ${u.fd} of pid ${u.pid}: unix socket ${ino} is connected to listener ${printableName(diagOf(st, ctx.processes[0].pid).get(u.peer)?.name ?? Buffer.alloc(0))} (socket ${u.peer}), outside the dumped tree, which has not accepted it yet; not supported`);
    }
    if (inTree && !u.inflight && inTree.peer !== ino) {
      // A datagram socket connected to one not connected back (one of its
      // senders): connected to its name again, which must be its own.
      const why = inTree.peer ? 'which is connected elsewhere' : !inTree.name.length ? 'which has no name to connect to'
        : [...st.socks.values()].some((o) => o.peer === ino && !o.inflight) ? 'and is itself connected to by others' : '';
      if (why) throw new StasisError(ErrorCodes.UNSUPPORTED, `fd ${u.fd} of pid ${u.pid}: unix datagram socket ${ino} is connected to socket ${u.peer}, ${why}; not supported`);
    }
    if (inTree) continue;
    const peer = diagOf(st, ctx.processes[0].pid).get(u.peer);
    if (ctx.opts.extUnixSk && u.type !== SOCK.STREAM && peer?.name.length) {
      fileId(ctx, `unix-extern:${u.peer}`, (id) => ({
        type: FD_TYPES.UNIXSK, id,
        usk: { id, ino: u.peer, type: peer.type, state: STATE.CLOSE, flags: O.RDWR, uflags: USK.EXTERN, backlog: 0, peer: 0, fown: NO_FOWN, opts: NO_OPTS, name: peer.name },
      }));
      continue;
    }
    const how = u.type === SOCK.STREAM ? 'a stream connection cannot be re-established to it'
      : peer?.name.length ? 'dump with --ext-unix-sk to connect to its name again' : 'it has no name to connect to again';
    throw new StasisError(ErrorCodes.UNSUPPORTED, `fd ${u.fd} of pid ${u.pid}: unix socket ${ino} is connected to socket ${u.peer} outside the dumped tree; ${how}`);
  }
  checkListeners(ctx, st.listeners, st.socks, (l) => printableName(l.name));
}

/**
 * One end of a connected pair: the pair is made with socketpair() by the
 * first process that needs either end, both ends parked there; queued data
 * is sent back through the other end.
 */
function pairEnd(ctx: RestoreCtx, tr: TaskRestore, e: Usk, byIno: Map<number, Usk>, made: Made): number {
  const t = tr.task;
  if (!made.has(e.ino)) {
    const ends = outBuf(8);
    t.call('socketpair', AF.UNIX, e.type | SOCK.CLOEXEC, 0, ends);
    const [a0, b0] = readI32s(ends.data, 2);
    const a = park(ctx, tr, a0);
    const b = park(ctx, tr, b0);
    made.set(e.ino, { pid: tr.img.pid, fd: a });
    made.set(e.peer, { pid: tr.img.pid, fd: b });
    for (const [ino, end, other] of [[e.ino, a, b], [e.peer, b, a]] as const) {
      const u = byIno.get(ino);
      if (!u) continue;
      restoreSockOpts(t, end, u.opts);
      // An end bound to a path itself (an accepted one only shares its listener's name).
      if (u.file_perms || u.deleted) bindName(ctx, t, end, u)();
      // Queued data of each end was sent by the other: send it again the same way.
      refill(ctx, tr, other, u.id);
    }
    // Shut once both queues are full again. A stream or seqpacket end shut
    // for reading makes its peer shut for writing too (the kernel's rule; a
    // socket shut before it connected has a peer without it: that peer comes
    // back with it, which changes nothing it can do: writes fail either way).
    for (const [ino, end] of [[e.ino, a], [e.peer, b]] as const) {
      const u = byIno.get(ino);
      if (u) restoreShutdown(t, end, u.shutdown, `unix socket ${ino}`);
    }
  }
  return takeMade(tr, made, e.ino);
}

/** Checks of the image: peers come in pairs; a connection not yet accepted has its listener and embryo. */
function loadUnix(path: string, files: Iterable<{ usk?: Usk }>): UnixLoaded {
  const byIno = new Map<number, Usk>();
  const embryos = new Map<number, Usk[]>();
  const senders = new Map<number, Usk[]>();
  for (const f of files) {
    if (!f.usk) continue;
    if (f.usk.embryo_of === undefined) byIno.set(f.usk.ino, f.usk);
    else embryos.set(f.usk.embryo_of, [...embryos.get(f.usk.embryo_of) ?? [], f.usk]);
  }
  const bad = (what: string) => new StasisError(ErrorCodes.BAD_IMAGE, `${path}: ${what}; not supported`);
  for (const [lino, list] of embryos) {
    list.sort((a, b) => a.id - b.id); // queue order
    if (byIno.get(lino)?.state !== STATE.LISTEN) throw bad(`a connection not yet accepted belongs to unix socket ${lino}, not a listener in this checkpoint`);
    for (const e of list) if (e.peer && byIno.get(e.peer)?.peer !== lino) throw bad(`the client ${e.peer} of a connection not yet accepted by ${lino} is not connected to it`);
  }
  for (const u of byIno.values()) {
    if (!u.peer) continue;
    const peer = byIno.get(u.peer);
    if (peer && peer.uflags & USK.EXTERN) continue;
    if (peer?.state === STATE.LISTEN) {
      if (!embryos.get(u.peer)?.some((e) => e.peer === u.ino)) throw bad(`unix socket ${u.ino} is connected to listener ${u.peer}, with no connection of its own there`);
      continue;
    }
    if (peer && peer.peer !== u.ino && u.type === SOCK.DGRAM && !peer.peer && peer.name.length) {
      senders.set(peer.ino, [...senders.get(peer.ino) ?? [], u]);
      continue;
    }
    if (u.peer === u.ino && (u.type !== SOCK.DGRAM || !u.name.length)) throw bad(`unix socket ${u.ino} is connected to itself, which only a named datagram socket can be`);
    if (!peer || peer.peer !== u.ino) throw bad(`unix socket ${u.ino} is connected to ${u.peer}, which is not its pair in this checkpoint`);
  }
  // A sender is made with its receiver: it cannot be one others connect to as well.
  for (const list of senders.values()) for (const u of list) if (senders.has(u.ino)) throw bad(`unix socket ${u.ino} is connected to another and others are connected to it`);
  return { byIno, embryos, senders };
}

/** The dump of one unix socket's fd: its entry, its queue in sk-queues. */
function dumpUnix(ctx: DumpCtx, d: { pid: number; fd: number; flags: number; st: { ino: number } }, id: number, st: DumpState): Usk {
  const u = diagOf(st, d.pid).get(d.st.ino);
  const what = `fd ${d.fd} of pid ${d.pid}: unix socket ${d.st.ino}`;
  if (!u) throw new StasisError(ErrorCodes.UNSUPPORTED, `${what} not found by sock_diag`);
  let peer = u.peer, inflight = false;
  // A stream or seqpacket socket connected with no peer: its server end is
  // in a listener's accept queue (no socket file yet), or its peer closed
  // (then it is shut both ways). A datagram socket shows connected, peer 0,
  // once another connected to it (or when its peer closed): a receiver.
  if (u.state === STATE.ESTABLISHED && !u.peer && u.type !== SOCK.DGRAM) {
    const l = listenerOf(st, d.pid, d.st.ino);
    if (l) [peer, inflight] = [l.ino, true];
    else if (u.shutdown !== SK_SHUTDOWN.BOTH) throw new StasisError(ErrorCodes.UNSUPPORTED, `${what} is connected, but neither to a peer nor in a listener's accept queue; not supported`);
  }
  const s = grabSocket(d.pid, d.fd);
  try {
    const type = getInt(s, SOL.SOCKET, SO.TYPE);
    const listening = getInt(s, SOL.SOCKET, SO.ACCEPTCONN) !== 0;
    const state = listening ? STATE.LISTEN : peer || (u.state === STATE.ESTABLISHED && type !== SOCK.DGRAM) ? STATE.ESTABLISHED : STATE.CLOSE;
    if (listening && u.icons.length) st.listeners.push({ ino: d.st.ino, pid: d.pid, fd: d.fd, type, name: u.name, icons: u.icons });
    // A stream or seqpacket socket never connected has no queue (recvmsg
    // says EINVAL or ENOTCONN): only a connected one is sent to.
    if (!listening && (type === SOCK.DGRAM || u.state !== STATE.CLOSE)) {
      const endAtZero = type === SOCK.SEQPACKET && (u.shutdown & SK_SHUTDOWN.READ) !== 0;
      dumpUnixQueue(ctx, d.pid, id, s, type, what, endAtZero);
    }
    st.socks.set(d.st.ino, { pid: d.pid, fd: d.fd, peer, type, wq: u.wq, shutdown: u.shutdown, name: u.name, inflight });
    return {
      id, ino: d.st.ino, type, state, flags: d.flags, uflags: 0, backlog: listening ? u.wq : 0, peer,
      fown: NO_FOWN, opts: dumpSockOpts(s, ctx.state(skQueuesUnit).some((q) => q.id === id), what), name: u.name, shutdown: u.shutdown,
      ...dumpNameState(d.pid, u, what),
    };
  } finally {
    sysTry('close', s);
  }
}

/**
 * A datagram socket connected to itself (bound, then connected to its own
 * name): made alone, bound, connected to its name again; what it had queued
 * (it sent it to itself) sent again through it. Not one end of a pair: its
 * peer is its own inode.
 */
function selfConnected(ctx: RestoreCtx, tr: TaskRestore, e: Usk): number {
  const t = tr.task;
  const fd = t.callNum('socket', AF.UNIX, e.type | SOCK.CLOEXEC, 0);
  restoreSockOpts(t, fd, e.opts);
  const done = bindName(ctx, t, fd, e);
  const a = sockaddrUn(e.name);
  try { t.call('connect', fd, inBuf(a), a.length); } finally { done(); }
  refill(ctx, tr, fd, e.id);
  restoreShutdown(t, fd, e.shutdown, `unix socket ${e.ino}`);
  return fd;
}

/**
 * A listener and the clients it has not accepted, or a datagram socket and
 * the ones connected to it, are made together by the first task needing
 * one; a pair by socketpair(); any other socket here.
 */
function openUnix(ctx: RestoreCtx, tr: TaskRestore, e: Usk, made: Made, un: UnixLoaded): number {
  const t = tr.task;
  const peer = e.peer ? un.byIno.get(e.peer) : undefined;
  const head = (u: Usk | undefined) => u && (u.state === STATE.LISTEN || un.senders.has(u.ino));
  const group = head(e) ? e : head(peer) ? peer : undefined;
  if (group) {
    if (!made.has(group.ino)) (group.state === STATE.LISTEN ? makeListener : makeReceiver)(ctx, tr, group, un, made);
    return takeMade(tr, made, e.ino);
  }
  if (e.peer === e.ino) return selfConnected(ctx, tr, e);
  if (e.peer) return pairEnd(ctx, tr, e, un.byIno, made);
  const { fd, done } = makeSocket(ctx, tr, e);
  restoreShutdown(t, fd, e.shutdown, `unix socket ${e.ino}`);
  done();
  return fd;
}

export const unixSocketUnit = defineFileUnit({
  name: 'unix sockets',
  dumpState: (): DumpState => ({ socks: new Map(), listeners: [] }),
  dumpPhases: [
    { name: 'unix-peers', after: ['files'], before: ['write-files'], once: checkPeers },
    // Reading an embryo's data accepts it: last, after every check of every unit that may refuse.
    { name: 'unix-embryos', after: ['unix-peers', 'ghost-files', 'memfd-inodes', 'pipes-data', 'fifo-data'], before: ['sk-queues', 'write-files'], once: (ctx, st) => dumpEmbryos(ctx, st.listeners, st.socks) },
  ],
  loadAfter: ['files'],
  load: (ld) => loadUnix(ld.images.path('files.img'), ld.loaded(filesUnit).files.values()),
  /** Sockets made by one task for another, by inode, parked in their maker. */
  restoreState: (): Made => new Map(),
  file: {
    type: FD_TYPES.UNIXSK,
    field: 'usk',
    match: (d) => d.st.isSocket() && isUnix(d.pid, d.fd),
    dump: (ctx, d, id, st) => dumpUnix(ctx, d, id, st),
    open(ctx, tr, e, made, un) {
      const t = tr.task;
      const peer = e.peer ? un.byIno.get(e.peer) : undefined;
      if (peer && peer.uflags & USK.EXTERN) {
        const fd = t.callNum('socket', AF.UNIX, e.type | SOCK.CLOEXEC, 0);
        restoreSockOpts(t, fd, e.opts);
        const a = sockaddrUn(peer.name);
        t.call('connect', fd, inBuf(a), a.length);
        restoreShutdown(t, fd, e.shutdown, `unix socket ${e.ino}`);
        if (e.flags & O.NONBLOCK) t.call('fcntl', fd, F.SETFL, O.NONBLOCK);
        return fd;
      }
      const fd = openUnix(ctx, tr, e, made, un);
      if (e.flags & O.NONBLOCK) t.call('fcntl', fd, F.SETFL, O.NONBLOCK);
      return fd;
    },
    describe: (u) => `unix ${printableName(u.name)}${u.state === STATE.LISTEN ? ' listening' : u.peer ? ` peer ${u.peer}` : ''}`,
  },
});
