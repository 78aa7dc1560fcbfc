// Unix sockets: stream, datagram and seqpacket; listening (path or abstract
// name, backlog), bound, and connected pairs whose both ends are in the tree,
// with their queued data. A connected pair is re-created with socketpair():
// the name an accepted socket had from its listener is not kept.
import * as fs from 'node:fs';
import { sysTry } from '../sys';
import { StasisError, ErrorCodes } from '../errors';
import { FD_TYPES } from './fdtypes';
import { NO_FOWN, type FileKind } from './filekind';
import { grabSocket, getInt, dumpSockOpts, restoreSockOpts, SO, SOL_SOCKET } from './sockopts';
import { peekQueue, sendAll } from './sockqueue';
import { park, fetchFd } from './fdutil';
import type { RestoreCtx, TaskRestore } from '../restore/context';
import type { Decoded, Entry } from '../images/image';

const AF_UNIX = 1;
const SOCK_STREAM = 1, SOCK_NONBLOCK = 0o4000;
const STATE = { ESTABLISHED: 1, CLOSE: 7, LISTEN: 10 } as const;
/** uflags: a peer outside the checkpoint (criu's USK_EXTERN). */
export const USK_EXTERN = 1;

const NO_OPTS = { so_sndbuf: 0, so_rcvbuf: 0, so_snd_tmo_sec: 0n, so_snd_tmo_usec: 0n, so_rcv_tmo_sec: 0n, so_rcv_tmo_usec: 0n };

/** files.img entry for a peer outside the tree, by its name. */
export function externPeerEntry(id: number, ino: number, type: number, name: Buffer): Entry {
  return { type: FD_TYPES.UNIXSK, id, usk: { id, ino, type, state: STATE.CLOSE, flags: 2, uflags: USK_EXTERN, backlog: 0, peer: 0, fown: NO_FOWN, opts: NO_OPTS, name } };
}

function isUnix(pid: number, fd: number): boolean {
  const s = grabSocket(pid, fd);
  try { return getInt(s, SOL_SOCKET, SO.DOMAIN) === AF_UNIX; } finally { sysTry('close', s); }
}

function sockaddrUn(name: Buffer): Buffer {
  const a = Buffer.alloc(2 + name.length);
  a.writeUInt16LE(AF_UNIX, 0);
  name.copy(a, 2);
  return a;
}

function printable(name: Buffer): string {
  return name.length && name[0] === 0 ? `@${name.subarray(1).toString()}` : name.toString();
}

export const unixSocketKind: FileKind = {
  name: 'unix socket',
  type: FD_TYPES.UNIXSK,
  field: 'usk',
  match: (d) => d.st.isSocket() && isUnix(d.pid, d.fd),
  dump(ctx, d, id) {
    const u = ctx.unixDiag().get(d.st.ino);
    if (!u) throw new StasisError(ErrorCodes.UNSUPPORTED, `fd ${d.fd} of pid ${d.pid}: unix socket ${d.st.ino} not found by sock_diag`);
    // A connection still waiting in a listener's accept queue has no socket
    // file yet: sock_diag shows it as connected with peer 0.
    if (u.state === STATE.ESTABLISHED && !u.peer) {
      throw new StasisError(ErrorCodes.UNSUPPORTED, `fd ${d.fd} of pid ${d.pid}: unix socket ${d.st.ino} is connected to a listener that has not accepted it yet (outside the dumped tree or not); not supported`);
    }
    if (u.icons.length) throw new StasisError(ErrorCodes.UNSUPPORTED, `fd ${d.fd} of pid ${d.pid}: listening unix socket ${printable(u.name)} has ${u.icons.length} connection(s) not yet accepted; not supported yet`);
    const s = grabSocket(d.pid, d.fd);
    try {
      const type = getInt(s, SOL_SOCKET, SO.TYPE);
      const listening = getInt(s, SOL_SOCKET, SO.ACCEPTCONN) !== 0;
      const state = listening ? STATE.LISTEN : u.peer ? STATE.ESTABLISHED : STATE.CLOSE;
      if (!listening) for (const q of peekQueue(s, type === SOCK_STREAM)) ctx.skQueues.push({ id, data: q.data });
      ctx.unixSocks.set(d.st.ino, { pid: d.pid, fd: d.fd, peer: u.peer, type });
      return {
        id, ino: d.st.ino, type, state, flags: d.flags, uflags: 0, backlog: listening ? u.wq : 0, peer: u.peer,
        fown: NO_FOWN, opts: dumpSockOpts(s), name: u.name, shutdown: u.shutdown,
      };
    } finally {
      sysTry('close', s);
    }
  },
  open(ctx, tr, e) {
    const t = tr.task;
    const nb = e.flags & 0o4000 ? SOCK_NONBLOCK : 0;
    let fd: number;
    const peer = e.peer ? unixEntry(ctx, e.peer) : undefined;
    const extern = peer && peer.uflags & USK_EXTERN ? peer : undefined;
    if (extern) {
      fd = Number(t.call('socket', AF_UNIX, e.type | nb, 0));
      restoreSockOpts(t, fd, e.opts);
      const a = sockaddrUn(Buffer.from(extern.name));
      t.call('connect', fd, t.put(a, 3584), a.length);
    } else if (e.peer) {
      fd = pairEnd(ctx, tr, e);
      if (nb) t.call('fcntl', fd, 4 /* F_SETFL */, 0o4000);
    } else {
      fd = Number(t.call('socket', AF_UNIX, e.type | nb, 0));
      restoreSockOpts(t, fd, e.opts);
      const name = Buffer.from(e.name ?? []);
      if (name.length) {
        // The dumped listener's socket file is still on disk: it would make bind fail.
        if (name[0] !== 0) {
          const p = name.toString().replace(/\0+$/, '');
          try { if (fs.lstatSync(p).isSocket()) fs.unlinkSync(p); } catch { /* not there */ }
        }
        const a = sockaddrUn(name);
        t.call('bind', fd, t.put(a, 3584), a.length);
      }
      if (e.state === STATE.LISTEN) t.call('listen', fd, e.backlog);
    }
    return fd;
  },
};

/** The unix_sk_entry of the socket with inode `ino` in this checkpoint. */
function unixEntry(ctx: RestoreCtx, ino: number): Decoded | undefined {
  for (const f of ctx.ckpt.files.values()) if (f.usk?.ino === ino) return f.usk;
  return undefined;
}

/**
 * One end of a connected pair: the pair is made with socketpair() by the
 * first process that needs either end, both ends parked there; queued data
 * is sent back through the other end.
 */
function pairEnd(ctx: RestoreCtx, tr: TaskRestore, e: Decoded): number {
  const t = tr.task;
  let have = ctx.sockPairs.get(e.ino);
  if (!have) {
    t.call('socketpair', AF_UNIX, e.type | 0o2000000, 0, t.scratch + 3072n);
    const ends = t.get(8, 3072);
    const a = park(ctx, tr, ends.readInt32LE(0));
    const b = park(ctx, tr, ends.readInt32LE(1 * 4));
    ctx.sockPairs.set(e.ino, { pid: tr.img.pid, fd: a });
    ctx.sockPairs.set(e.peer, { pid: tr.img.pid, fd: b });
    for (const [ino, end, other] of [[e.ino, a, b], [e.peer, b, a]] as const) {
      const u = unixEntry(ctx, ino);
      if (!u) continue;
      restoreSockOpts(t, end, u.opts);
      // Queued data of each end was sent by the other: send it again the same way.
      const queued = ctx.ckpt.skQueues.get(u.id) ?? [];
      if (!queued.length) continue;
      const s = grabSocket(tr.img.pid, other);
      try { for (const q of queued) sendAll(s, q.data); } finally { sysTry('close', s); }
    }
    have = ctx.sockPairs.get(e.ino)!;
  }
  return have.pid === tr.img.pid ? Number(t.call('dup', have.fd)) : fetchFd(t, have.pid, have.fd);
}
