// sock_diag over netlink: what the kernel knows of sockets that getsockopt
// does not tell: a unix socket's peer and queue, a listener's backlog.
import * as fs from 'node:fs';
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
  /** The inode of the socket file a path name made, 0 when none. */
  vfsIno: number;
}

/** Every unix socket of this network namespace, by inode. */
export function unixSockets(): Map<number, UnixDiag> {
  const out = new Map<number, UnixDiag>();
  const req = UNIX_DIAG_REQ.encode({ family: AF.UNIX, states: DIAG_ALL_STATES, show: UDIAG_SHOW.NAME | UDIAG_SHOW.VFS | UDIAG_SHOW.PEER | UDIAG_SHOW.ICONS | UDIAG_SHOW.RQLEN });
  sockDiag(req, (p) => {
    const m = UNIX_DIAG_MSG.decode(p);
    const d: UnixDiag = { type: m.type, state: m.state, ino: m.ino, peer: 0, name: Buffer.alloc(0), rq: 0, wq: 0, icons: [], shutdown: 0, vfsIno: 0 };
    for (const { type, value: v } of netlinkAttrs(p, UNIX_DIAG_MSG.size)) {
      if (type === UNIX_DIAG.NAME) d.name = Buffer.from(v);
      else if (type === UNIX_DIAG.VFS) d.vfsIno = v.readUInt32LE(0);
      else if (type === UNIX_DIAG.PEER) d.peer = v.readUInt32LE(0);
      else if (type === UNIX_DIAG.RQLEN) { d.rq = v.readUInt32LE(0); d.wq = v.readUInt32LE(4); }
      else if (type === UNIX_DIAG.ICONS) for (let i = 0; i + 4 <= v.length; i += 4) d.icons.push(v.readUInt32LE(i));
      else if (type === UNIX_DIAG.SHUTDOWN) d.shutdown = v.readUInt8(0);
    }
    out.set(d.ino, d);
  });
  return out;
}

/**
 * shutdown: the socket's sk_shutdown bits (1 receive, 2 send), as shutdown() left them.
 * dst: the peer's address bytes (16, an IPv4 one in the first 4) and dport its port.
 */
export interface InetDiag { ino: number; state: number; rqueue: number; wqueue: number; shutdown: number; dport: number; dst: Buffer }

/** TCP/UDP/UDP-Lite sockets of one family and protocol, by inode. For a listener, wqueue is its backlog. */
export function inetSockets(family: number, protocol: number): Map<number, InetDiag> {
  const out = new Map<number, InetDiag>();
  const req = INET_DIAG_REQ_V2.encode({ family, protocol, states: DIAG_ALL_STATES });
  sockDiag(req, (p) => {
    const m = INET_DIAG_MSG.decode(p);
    const id = abi.INET_DIAG_SOCKID.decode(m.id);
    const d: InetDiag = { state: m.state, rqueue: m.rqueue, wqueue: m.wqueue, ino: m.inode, shutdown: 0, dport: id.dport, dst: Buffer.from(id.dst) };
    // Attributes after the message; the kernel always adds INET_DIAG_SHUTDOWN.
    for (const { type, value } of netlinkAttrs(p, INET_DIAG_MSG.size)) if (type === INET_DIAG.SHUTDOWN) d.shutdown = value.readUInt8(0);
    out.set(d.ino, d);
  });
  return out;
}

/** What packet_diag tells of a packet socket (the attributes asked: info, multicast list, rings, fanout). */
export interface PacketDiag {
  ino: number; type: number; proto: number;
  info?: ReturnType<typeof abi.PACKET_DIAG_INFO.decode>;
  mclist: ReturnType<typeof abi.PACKET_DIAG_MCLIST.decode>[];
  rx?: ReturnType<typeof abi.PACKET_DIAG_RING.decode>;
  tx?: ReturnType<typeof abi.PACKET_DIAG_RING.decode>;
  fanout?: number;
}

/** Every packet socket of this network namespace, by inode. */
export function packetSockets(): Map<number, PacketDiag> {
  const out = new Map<number, PacketDiag>();
  const { PACKET_SHOW: S, PACKET_DIAG: A, PACKET_DIAG_MCLIST: MC } = abi;
  const req = abi.PACKET_DIAG_REQ.encode({ family: AF.PACKET, show: S.INFO | S.MCLIST | S.RING_CFG | S.FANOUT, cookie: [0xffffffff, 0xffffffff] });
  sockDiag(req, (p) => {
    const m = abi.PACKET_DIAG_MSG.decode(p);
    const d: PacketDiag = { ino: m.ino, type: m.type, proto: m.num, mclist: [] };
    for (const { type, value: v } of netlinkAttrs(p, abi.PACKET_DIAG_MSG.size)) {
      if (type === A.INFO) d.info = abi.PACKET_DIAG_INFO.decode(v);
      else if (type === A.MCLIST) for (let i = 0; i + MC.size <= v.length; i += MC.size) d.mclist.push(MC.decode(v, i));
      else if (type === A.RX_RING) d.rx = abi.PACKET_DIAG_RING.decode(v);
      else if (type === A.TX_RING) d.tx = abi.PACKET_DIAG_RING.decode(v);
      else if (type === A.FANOUT) d.fanout = v.readUInt32LE(0);
    }
    out.set(d.ino, d);
  });
  return out;
}

/**
 * Ping (SOCK_DGRAM, IPPROTO_ICMP/ICMPV6) or raw sockets of pid's network
 * namespace, by inode, from /proc/PID/net/{icmp,raw}{,6}: sock_diag has no
 * module for ping sockets, and raw_diag may not be loaded. They tell the
 * state, and the peer of a connected socket, which getpeername does not tell
 * when its "port" is 0. Addresses come as the u32 words CRIU keeps.
 */
export function procSockets(pid: number, family: number, kind: 'icmp' | 'raw'): Map<number, InetDiag> {
  const out = new Map<number, InetDiag>();
  let text: string;
  try { text = fs.readFileSync(`/proc/${pid}/net/${kind}${family === AF.INET6 ? '6' : ''}`, 'utf8'); } catch { return out; }
  for (const line of text.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 10) continue;
    const [rhost, rport] = f[2].split(':');
    const dst = Buffer.alloc(16);
    (rhost.match(/.{8}/g) ?? []).forEach((w, i) => dst.writeUInt32LE(parseInt(w, 16) >>> 0, i * 4));
    const [tx, rx] = f[4].split(':').map((x) => parseInt(x, 16));
    out.set(Number(f[9]), { ino: Number(f[9]), state: parseInt(f[3], 16), rqueue: rx, wqueue: tx, shutdown: 0, dport: parseInt(rport, 16), dst });
  }
  return out;
}
