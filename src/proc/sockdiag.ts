// sock_diag over netlink: what the kernel knows of sockets that getsockopt
// does not tell: a unix socket's peer and queue, a listener's backlog.
import { sys, sysTry, addressOf } from '../sys';

const AF_NETLINK = 16, AF_UNIX = 1;
const SOCK_DGRAM = 2, SOCK_CLOEXEC = 0o2000000;
const NETLINK_SOCK_DIAG = 4;
const SOCK_DIAG_BY_FAMILY = 20;
const NLM_F_REQUEST = 1, NLM_F_DUMP = 0x300;
const NLMSG_ERROR = 2, NLMSG_DONE = 3;
const NLMSG_HDRLEN = 16;

function dumpRequest(body: Buffer, handle: (payload: Buffer) => void): void {
  const fd = sys('socket', AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
  try {
    const req = Buffer.alloc(NLMSG_HDRLEN + body.length);
    req.writeUInt32LE(req.length, 0);
    req.writeUInt16LE(SOCK_DIAG_BY_FAMILY, 4);
    req.writeUInt16LE(NLM_F_REQUEST | NLM_F_DUMP, 6);
    req.writeUInt32LE(1, 8);
    body.copy(req, NLMSG_HDRLEN);
    sys('sendto', fd, addressOf(req), req.length, 0, 0, 0);
    const buf = Buffer.alloc(1 << 16);
    for (;;) {
      const n = sys('recvfrom', fd, addressOf(buf), buf.length, 0, 0, 0);
      let off = 0;
      while (off + NLMSG_HDRLEN <= n) {
        const len = buf.readUInt32LE(off);
        const type = buf.readUInt16LE(off + 4);
        if (len < NLMSG_HDRLEN) return;
        if (type === NLMSG_DONE) return;
        if (type === NLMSG_ERROR) {
          const err = buf.readInt32LE(off + NLMSG_HDRLEN);
          if (err === 0) return;
          throw new Error(`sock_diag: errno ${-err}`);
        }
        handle(Buffer.from(buf.subarray(off + NLMSG_HDRLEN, off + len)));
        off += (len + 3) & ~3;
      }
    }
  } finally {
    sysTry('close', fd);
  }
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

const UDIAG_SHOW_NAME = 1, UDIAG_SHOW_PEER = 4, UDIAG_SHOW_ICONS = 8, UDIAG_SHOW_RQLEN = 0x10;
const UNIX_DIAG_NAME = 0, UNIX_DIAG_PEER = 2, UNIX_DIAG_ICONS = 3, UNIX_DIAG_RQLEN = 4, UNIX_DIAG_SHUTDOWN = 6;

/** Every unix socket of this network namespace, by inode. */
export function unixSockets(): Map<number, UnixDiag> {
  const out = new Map<number, UnixDiag>();
  const req = Buffer.alloc(24);
  req.writeUInt8(AF_UNIX, 0);
  req.writeUInt32LE(0xffffffff, 4); // all states
  req.writeUInt32LE(UDIAG_SHOW_NAME | UDIAG_SHOW_PEER | UDIAG_SHOW_ICONS | UDIAG_SHOW_RQLEN, 12);
  dumpRequest(req, (p) => {
    const d: UnixDiag = { type: p.readUInt8(1), state: p.readUInt8(2), ino: p.readUInt32LE(4), peer: 0, name: Buffer.alloc(0), rq: 0, wq: 0, icons: [], shutdown: 0 };
    for (let off = 16; off + 4 <= p.length; ) {
      const len = p.readUInt16LE(off), type = p.readUInt16LE(off + 2);
      if (len < 4) break;
      const v = p.subarray(off + 4, off + len);
      if (type === UNIX_DIAG_NAME) d.name = Buffer.from(v);
      else if (type === UNIX_DIAG_PEER) d.peer = v.readUInt32LE(0);
      else if (type === UNIX_DIAG_RQLEN) { d.rq = v.readUInt32LE(0); d.wq = v.readUInt32LE(4); }
      else if (type === UNIX_DIAG_ICONS) for (let i = 0; i + 4 <= v.length; i += 4) d.icons.push(v.readUInt32LE(i));
      else if (type === UNIX_DIAG_SHUTDOWN) d.shutdown = v.readUInt8(0);
      off += (len + 3) & ~3;
    }
    out.set(d.ino, d);
  });
  return out;
}

/** shutdown: the socket's sk_shutdown bits (1 receive, 2 send), as shutdown() left them. */
export interface InetDiag { ino: number; state: number; rqueue: number; wqueue: number; shutdown: number }

const INET_DIAG_MSG_SIZE = 72, INET_DIAG_SHUTDOWN = 8;

/** TCP/UDP sockets of one family and protocol, by inode. For a listener, wqueue is its backlog. */
export function inetSockets(family: number, protocol: number): Map<number, InetDiag> {
  const out = new Map<number, InetDiag>();
  const req = Buffer.alloc(56);
  req.writeUInt8(family, 0);
  req.writeUInt8(protocol, 1);
  req.writeUInt32LE(0xffffffff, 4);
  dumpRequest(req, (p) => {
    // inet_diag_msg: family, state, timer, retrans, sockid (48 bytes), expires, rqueue, wqueue, uid, inode
    const d: InetDiag = { state: p.readUInt8(1), rqueue: p.readUInt32LE(56), wqueue: p.readUInt32LE(60), ino: p.readUInt32LE(68), shutdown: 0 };
    // Attributes after the message; the kernel always adds INET_DIAG_SHUTDOWN.
    for (let off = INET_DIAG_MSG_SIZE; off + 4 <= p.length; ) {
      const len = p.readUInt16LE(off), type = p.readUInt16LE(off + 2);
      if (len < 4) break;
      if (type === INET_DIAG_SHUTDOWN) d.shutdown = p.readUInt8(off + 4);
      off += (len + 3) & ~3;
    }
    out.set(d.ino, d);
  });
  return out;
}
