// Unix sockets: stream, datagram and seqpacket; listening (path or abstract
// name, backlog), bound, and connected pairs whose both ends are in the tree,
// with their queued data. A connected pair is re-created with socketpair():
// the name an accepted socket had from its listener is not kept. With
// --ext-unix-sk a datagram socket connected to a named peer outside the tree
// (syslog's /dev/log, say) is connected to that name again.
import * as fs from 'node:fs';
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
import { dumpUnixQueue, sendQueued } from './scm-rights';
import { park, fetchFd, fileId, filesUnit } from './files';
import { dumpSocketPerms, socketPath, restoreSocketPerms } from './unix-perms';

const { AF, SOCK, SOL, SO, TCP_STATE: STATE, O, F, readI32s } = abi;
type Usk = Msg<'unix_sk_entry'>;

const NO_OPTS = { so_sndbuf: 0, so_rcvbuf: 0, so_snd_tmo_sec: 0n, so_snd_tmo_usec: 0n, so_rcv_tmo_sec: 0n, so_rcv_tmo_usec: 0n };

interface DumpState {
  diag?: Map<number, UnixDiag>;
  /** Unix sockets dumped, by inode, with their peer inode: peers must be in the tree too. */
  socks: Map<number, { pid: number; fd: number; peer: number; type: number }>;
}

/** The unix sockets of pid's network namespace (the tree's: nested ones are refused). */
function diagOf(st: DumpState, pid: number): Map<number, UnixDiag> { return (st.diag ??= inNamespaceOf(pid, 'net', unixSockets)); }

function isUnix(pid: number, fd: number): boolean {
  const s = grabSocket(pid, fd);
  try { return getInt(s, SOL.SOCKET, SO.DOMAIN) === AF.UNIX; } finally { sysTry('close', s); }
}

function sockaddrUn(name: Buffer): Buffer {
  const a = Buffer.alloc(2 + name.length);
  a.writeUInt16LE(AF.UNIX, 0);
  name.copy(a, 2);
  return a;
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
    if (!u.peer || st.socks.has(u.peer)) continue;
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
}

/**
 * One end of a connected pair: the pair is made with socketpair() by the
 * first process that needs either end, both ends parked there; queued data
 * is sent back through the other end.
 */
function pairEnd(ctx: RestoreCtx, tr: TaskRestore, e: Usk, byIno: Map<number, Usk>, pairs: Map<number, { pid: number; fd: number }>): number {
  const t = tr.task;
  let have = pairs.get(e.ino);
  if (!have) {
    const ends = outBuf(8);
    t.call('socketpair', AF.UNIX, e.type | SOCK.CLOEXEC, 0, ends);
    const [a0, b0] = readI32s(ends.data, 2);
    const a = park(ctx, tr, a0);
    const b = park(ctx, tr, b0);
    pairs.set(e.ino, { pid: tr.img.pid, fd: a });
    pairs.set(e.peer, { pid: tr.img.pid, fd: b });
    for (const [ino, end, other] of [[e.ino, a, b], [e.peer, b, a]] as const) {
      const u = byIno.get(ino);
      if (!u) continue;
      restoreSockOpts(t, end, u.opts);
      // Queued data of each end was sent by the other: send it again the same way.
      const queued = ctx.loaded(skQueuesUnit).get(u.id) ?? [];
      if (!queued.length) continue;
      const s = grabSocket(tr.task.pid, other);
      try { sendQueued(ctx, tr, s, queued); } finally { sysTry('close', s); }
    }
    // Shut once both queues are full again. A stream or seqpacket end shut
    // for reading makes its peer shut for writing too (the kernel's rule; a
    // socket shut before it connected has a peer without it: that peer comes
    // back with it, which changes nothing it can do: writes fail either way).
    for (const [ino, end] of [[e.ino, a], [e.peer, b]] as const) {
      const u = byIno.get(ino);
      if (u) restoreShutdown(t, end, u.shutdown, `unix socket ${ino}`);
    }
    have = pairs.get(e.ino)!;
  }
  return have.pid === tr.img.pid ? t.callNum('dup', have.fd) : fetchFd(t, have.pid, have.fd);
}

export const unixSocketUnit = defineFileUnit({
  name: 'unix sockets',
  dumpState: (): DumpState => ({ socks: new Map() }),
  dumpPhases: [{ name: 'unix-peers', after: ['files'], before: ['write-files'], once: checkPeers }],
  loadAfter: ['files'],
  /** Every unix socket of the checkpoint by inode; connected ones must come in pairs. */
  load(ld) {
    const byIno = new Map<number, Usk>();
    for (const f of ld.loaded(filesUnit).files.values()) if (f.usk) byIno.set(f.usk.ino, f.usk);
    for (const u of byIno.values()) {
      if (!u.peer) continue;
      const peer = byIno.get(u.peer);
      if (peer && peer.uflags & USK.EXTERN) continue;
      if (!peer || peer.peer !== u.ino) throw new StasisError(ErrorCodes.BAD_IMAGE, `${ld.images.path('files.img')}: unix socket ${u.ino} is connected to ${u.peer}, which is not its pair in this checkpoint; not supported`);
    }
    return byIno;
  },
  /** Both ends of connected pairs, by socket inode, parked in their creator. */
  restoreState: () => new Map<number, { pid: number; fd: number }>(),
  file: {
    type: FD_TYPES.UNIXSK,
    field: 'usk',
    match: (d) => d.st.isSocket() && isUnix(d.pid, d.fd),
    dump(ctx, d, id, st) {
      const u = diagOf(st, d.pid).get(d.st.ino);
      if (!u) throw new StasisError(ErrorCodes.UNSUPPORTED, `fd ${d.fd} of pid ${d.pid}: unix socket ${d.st.ino} not found by sock_diag`);
      // A connection still waiting in a listener's accept queue has no socket
      // file yet: sock_diag shows it as connected with peer 0.
      if (u.state === STATE.ESTABLISHED && !u.peer) {
        throw new StasisError(ErrorCodes.UNSUPPORTED, `fd ${d.fd} of pid ${d.pid}: unix socket ${d.st.ino} is connected to a listener that has not accepted it yet (outside the dumped tree or not); not supported`);
      }
      if (u.icons.length) throw new StasisError(ErrorCodes.UNSUPPORTED, `fd ${d.fd} of pid ${d.pid}: listening unix socket ${printableName(u.name)} has ${u.icons.length} connection(s) not yet accepted; not supported yet`);
      const s = grabSocket(d.pid, d.fd);
      try {
        const type = getInt(s, SOL.SOCKET, SO.TYPE);
        const listening = getInt(s, SOL.SOCKET, SO.ACCEPTCONN) !== 0;
        const state = listening ? STATE.LISTEN : u.peer ? STATE.ESTABLISHED : STATE.CLOSE;
        // A stream or seqpacket socket never connected has no queue (recvmsg
        // says EINVAL or ENOTCONN): only a connected one is sent to.
        if (!listening && (type === SOCK.DGRAM || u.state !== STATE.CLOSE)) {
          const endAtZero = type === SOCK.SEQPACKET && (u.shutdown & SK_SHUTDOWN.READ) !== 0;
          dumpUnixQueue(ctx, d.pid, id, s, type, `fd ${d.fd} of pid ${d.pid}: unix socket ${d.st.ino}`, endAtZero, u.peer);
        }
        st.socks.set(d.st.ino, { pid: d.pid, fd: d.fd, peer: u.peer, type });
        return {
          id, ino: d.st.ino, type, state, flags: d.flags, uflags: 0, backlog: listening ? u.wq : 0, peer: u.peer,
          fown: NO_FOWN, opts: dumpSockOpts(s, ctx.state(skQueuesUnit).some((q) => q.id === id), `fd ${d.fd} of pid ${d.pid}: unix socket ${d.st.ino}`), name: u.name, shutdown: u.shutdown,
          file_perms: dumpSocketPerms(d.pid, u.name),
        };
      } finally {
        sysTry('close', s);
      }
    },
    open(ctx, tr, e, pairs, byIno) {
      const t = tr.task;
      const nb = e.flags & O.NONBLOCK ? SOCK.NONBLOCK : 0;
      const peer = e.peer ? byIno.get(e.peer) : undefined;
      if (peer && peer.uflags & USK.EXTERN) {
        const fd = t.callNum('socket', AF.UNIX, e.type | nb, 0);
        restoreSockOpts(t, fd, e.opts);
        const a = sockaddrUn(peer.name);
        t.call('connect', fd, inBuf(a), a.length);
        restoreShutdown(t, fd, e.shutdown, `unix socket ${e.ino}`);
        return fd;
      }
      if (e.peer) {
        const fd = pairEnd(ctx, tr, e, byIno, pairs);
        if (nb) t.call('fcntl', fd, F.SETFL, O.NONBLOCK);
        return fd;
      }
      const fd = t.callNum('socket', AF.UNIX, e.type | nb, 0);
      restoreSockOpts(t, fd, e.opts);
      if (e.name.length) {
        // The dumped listener's socket file is still on disk: it would make bind fail.
        const p = socketPath(t.pid, e.name, ctx.fsRoot);
        try { if (p && fs.lstatSync(p).isSocket()) fs.unlinkSync(p); } catch { /* not there */ }
        const a = sockaddrUn(e.name);
        t.call('bind', fd, inBuf(a), a.length);
        restoreSocketPerms(t.pid, e.name, ctx.fsRoot, e.file_perms);
      }
      if (e.state === STATE.LISTEN) t.call('listen', fd, e.backlog);
      restoreShutdown(t, fd, e.shutdown, `unix socket ${e.ino}`);
      return fd;
    },
    describe: (u) => `unix ${printableName(u.name)}${u.state === STATE.LISTEN ? ' listening' : u.peer ? ` peer ${u.peer}` : ''}`,
  },
});
