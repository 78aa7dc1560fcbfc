// sock_diag over netlink: what the kernel knows of sockets that getsockopt
// does not tell: a unix socket's peer and queue, a listener's backlog.
import { abi } from '../sys';
import { netlinkDump, netlinkAttrs } from '../sys/netlink';

const { AF, NETLINK, SOCK_DIAG_BY_FAMILY, UDIAG_SHOW, UNIX_DIAG, INET_DIAG, DIAG_ALL_STATES, UNIX_DIAG_REQ, UNIX_DIAG_MSG, INET_DIAG_REQ_V2, INET_DIAG_MSG } = abi;

function sockDiag(req: Buffer, handle: (payload: Buffer) => void): void {
  netlinkDump(NETLINK.SOCK_DIAG, SOCK_DIAG_BY_FAMILY, req, handle);
}

export interface UnixDiag {
  ino: number; type: number; state: number; peer: number;
  /** Bound name (sun_path bytes; abstract names start with a NUL), empty if unbound. */
  name: Buffer;
  /** Bytes queued to read (listeners: pending connections) and, for listeners, the backlog. */
  rq: number; wq: number;
  /** Inodes of connections waiting in a listener's accept queue. */
  icons: number[];
  shutdown: number;
}

/** Every unix socket of this network namespace, by inode. */
export function unixSockets(): Map<number, UnixDiag> {
  const out = new Map<number, UnixDiag>();
  const req = UNIX_DIAG_REQ.encode({ family: AF.UNIX, states: DIAG_ALL_STATES, show: UDIAG_SHOW.NAME | UDIAG_SHOW.PEER | UDIAG_SHOW.ICONS | UDIAG_SHOW.RQLEN });
  sockDiag(req, (p) => {
    const m = UNIX_DIAG_MSG.decode(p);
    const d: UnixDiag = { type: m.type, state: m.state, ino: m.ino, peer: 0, name: Buffer.alloc(0), rq: 0, wq: 0, icons: [], shutdown: 0 };
    for (const { type, value: v } of netlinkAttrs(p, UNIX_DIAG_MSG.size)) {
      if (type === UNIX_DIAG.NAME) d.name = Buffer.from(v);
      else if (type === UNIX_DIAG.PEER) d.peer = v.readUInt32LE(0);
      else if (type === UNIX_DIAG.RQLEN) { d.rq = v.readUInt32LE(0); d.wq = v.readUInt32LE(4); }
      else if (type === UNIX_DIAG.ICONS) for (let i = 0; i + 4 <= v.length; i += 4) d.icons.push(v.readUInt32LE(i));
      else if (type === UNIX_DIAG.SHUTDOWN) d.shutdown = v.readUInt8(0);
    }
    out.set(d.ino, d);
  });
  return out;
}

/** shutdown: the socket's sk_shutdown bits (1 receive, 2 send), as shutdown() left them. */
export interface InetDiag { ino: number; state: number; rqueue: number; wqueue: number; shutdown: number }

/** TCP/UDP sockets of one family and protocol, by inode. For a listener, wqueue is its backlog. */
export function inetSockets(family: number, protocol: number): Map<number, InetDiag> {
  const out = new Map<number, InetDiag>();
  const req = INET_DIAG_REQ_V2.encode({ family, protocol, states: DIAG_ALL_STATES });
  sockDiag(req, (p) => {
    const m = INET_DIAG_MSG.decode(p);
    const d: InetDiag = { state: m.state, rqueue: m.rqueue, wqueue: m.wqueue, ino: m.inode, shutdown: 0 };
    // Attributes after the message; the kernel always adds INET_DIAG_SHUTDOWN.
    for (const { type, value } of netlinkAttrs(p, INET_DIAG_MSG.size)) if (type === INET_DIAG.SHUTDOWN) d.shutdown = value.readUInt8(0);
    out.set(d.ino, d);
  });
  return out;
}
