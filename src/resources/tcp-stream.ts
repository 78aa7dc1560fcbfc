// Established TCP connections (--tcp-established), through TCP_REPAIR: the
// sequence numbers, both queues (received but unread; sent but not acked or
// not yet sent), the negotiated options and the windows go into
// tcp-stream-INO.img; restore builds a socket in repair mode that is
// ESTABLISHED without a handshake and carries on from those numbers.
//
// Both halves work on stasis's own copy of the task's socket (pidfd_getfd):
// same socket, so no remote calls are needed. TCP_REPAIR needs CAP_NET_ADMIN.
import { sys, sysTry, addressOf } from '../sys';
import { writeImage, readImage, type Entry, type Decoded } from '../images/image';
import { StasisError, ErrorCodes } from '../errors';

const IPPROTO_TCP = 6;
const TCP = { MAXSEG: 2, NODELAY: 1, CORK: 3, INFO: 11, REPAIR: 19, REPAIR_QUEUE: 20, QUEUE_SEQ: 21, REPAIR_OPTIONS: 22, TIMESTAMP: 24, REPAIR_WINDOW: 29 } as const;
const QUEUE = { RECV: 1, SEND: 2 } as const;
const TCPOPT = { MAXSEG: 2, WINDOW: 3, SACK_PERM: 4, TIMESTAMP: 8 } as const;
const TCPI_OPT = { TIMESTAMPS: 1, SACK: 2, WSCALE: 4 } as const;
const SIOCINQ = 0x541b, SIOCOUTQ = 0x5411, SIOCOUTQNSD = 0x894b;
const MSG_PEEK = 2, MSG_DONTWAIT = 0x40;

function setInt(fd: number, opt: number, v: number): void {
  const b = Buffer.alloc(4);
  b.writeInt32LE(v);
  sys('setsockopt', fd, IPPROTO_TCP, opt, addressOf(b), 4, 0, `TCP option ${opt}`);
}

function getInt(fd: number, opt: number): number {
  const b = Buffer.alloc(4), l = Buffer.alloc(4);
  l.writeUInt32LE(4);
  sys('getsockopt', fd, IPPROTO_TCP, opt, addressOf(b), addressOf(l));
  return b.readInt32LE(0);
}

function ioctlInt(fd: number, req: number): number {
  const b = Buffer.alloc(4);
  sys('ioctl', fd, req, addressOf(b));
  return b.readInt32LE(0);
}

const SOL_SOCKET = 1, SO_REUSEADDR = 2, SO_SNDBUFFORCE = 32, SO_RCVBUFFORCE = 33;

function getSockInt(fd: number, opt: number): number {
  const b = Buffer.alloc(4), l = Buffer.alloc(4);
  l.writeUInt32LE(4);
  sys('getsockopt', fd, SOL_SOCKET, opt, addressOf(b), addressOf(l));
  return b.readInt32LE(0);
}

function setSockInt(fd: number, opt: number, v: number): number {
  const b = Buffer.alloc(4);
  b.writeInt32LE(v);
  return sysTry('setsockopt', fd, SOL_SOCKET, opt, addressOf(b), 4);
}

/** Put our copy of the socket in repair mode (the connection then sends nothing). */
export function repairOn(fd: number): { fd: number; reuse: number } {
  // Repair mode forces address reuse on, and leaving it clears it: keep the program's setting.
  const reuse = getSockInt(fd, SO_REUSEADDR);
  setInt(fd, TCP.REPAIR, 1);
  return { fd, reuse };
}
/** Leave repair mode (a connection going on as before), with the program's SO_REUSEADDR back. */
export function repairOff(s: { fd: number; reuse: number }): number {
  const b = Buffer.alloc(4);
  const r = sysTry('setsockopt', s.fd, IPPROTO_TCP, TCP.REPAIR, addressOf(b), 4);
  if (s.reuse) setSockInt(s.fd, SO_REUSEADDR, 1);
  return r;
}

function peekQueue(fd: number, queue: number, len: number): Buffer {
  setInt(fd, TCP.REPAIR_QUEUE, queue);
  const out = Buffer.alloc(len);
  let got = 0;
  if (len > 0) {
    const n = sys('recvfrom', fd, addressOf(out), len, MSG_PEEK | MSG_DONTWAIT, 0, 0);
    got = n;
  }
  if (got !== len) throw new StasisError(ErrorCodes.UNSUPPORTED, `TCP repair: read ${got} of ${len} queued bytes`);
  return out;
}

/** Dump one established connection (our copy `fd`, already in repair mode). */
export function dumpTcpStream(dir: string, ino: number, fd: number): void {
  const inqLen = ioctlInt(fd, SIOCINQ);
  const outqLen = ioctlInt(fd, SIOCOUTQ);
  const unsqLen = ioctlInt(fd, SIOCOUTQNSD);
  setInt(fd, TCP.REPAIR_QUEUE, QUEUE.RECV);
  const inqSeq = getInt(fd, TCP.QUEUE_SEQ) >>> 0;
  setInt(fd, TCP.REPAIR_QUEUE, QUEUE.SEND);
  const outqSeq = getInt(fd, TCP.QUEUE_SEQ) >>> 0;
  const inq = peekQueue(fd, QUEUE.RECV, inqLen);
  const outq = peekQueue(fd, QUEUE.SEND, outqLen);
  const info = Buffer.alloc(104), il = Buffer.alloc(4);
  il.writeUInt32LE(info.length);
  sys('getsockopt', fd, IPPROTO_TCP, TCP.INFO, addressOf(info), addressOf(il));
  const options = info.readUInt8(5);
  const wscale = info.readUInt8(6);
  const win = Buffer.alloc(20), wl = Buffer.alloc(4);
  wl.writeUInt32LE(20);
  sys('getsockopt', fd, IPPROTO_TCP, TCP.REPAIR_WINDOW, addressOf(win), addressOf(wl));
  const e: Entry = {
    inq_len: inqLen, inq_seq: inqSeq, outq_len: outqLen, outq_seq: outqSeq,
    opt_mask: options & (TCPI_OPT.TIMESTAMPS | TCPI_OPT.SACK | TCPI_OPT.WSCALE),
    snd_wscale: wscale & 0xf, rcv_wscale: wscale >> 4, mss_clamp: getInt(fd, TCP.MAXSEG),
    timestamp: getInt(fd, TCP.TIMESTAMP) >>> 0, cork: getInt(fd, TCP.CORK) !== 0, nodelay: getInt(fd, TCP.NODELAY) !== 0,
    unsq_len: unsqLen, snd_wl1: win.readUInt32LE(0), snd_wnd: win.readUInt32LE(4), max_window: win.readUInt32LE(8),
    rcv_wnd: win.readUInt32LE(12), rcv_wup: win.readUInt32LE(16),
  };
  writeImage(dir, tcpStreamFile(ino), 'TCP_STREAM', [['tcp_stream_entry', e, Buffer.concat([inq, outq])]]);
}

export function tcpStreamFile(ino: number): string {
  return `tcp-stream-${ino.toString(16)}.img`;
}

export function loadTcpStream(dir: string, ino: number): Decoded {
  const [e] = readImage(dir, tcpStreamFile(ino), 'TCP_STREAM', ['tcp_stream_entry'], (d) => d.inq_len + d.outq_len);
  if (!e) throw new StasisError(ErrorCodes.BAD_IMAGE, `${dir}/${tcpStreamFile(ino)}: empty`);
  return e;
}

/** Segments of at most this size: one repair-mode send makes one skb. */
const CHUNK = 64 * 1024;

function sendAll(fd: number, data: Buffer): void {
  for (let off = 0; off < data.length; ) {
    // Never block: the buffers were made big enough, so EAGAIN here is a real failure.
    const n = sys('sendto', fd, addressOf(data) + BigInt(off), Math.min(CHUNK, data.length - off), MSG_DONTWAIT, 0, 0, 'TCP queue');
    off += n;
  }
}

function sendQueue(fd: number, queue: number, data: Buffer): void {
  setInt(fd, TCP.REPAIR_QUEUE, queue);
  sendAll(fd, data);
}

/**
 * Make our copy `fd` of a fresh socket the dumped connection: repair mode,
 * sequence numbers, bind and connect (no handshake in repair mode), options,
 * queued data, windows, then out of repair mode.
 */
export function restoreTcpStream(fd: number, e: Decoded, local: Buffer, peer: Buffer, sk: Decoded): void {
  const rs = repairOn(fd);
  rs.reuse = sk.reuseaddr ? 1 : 0;
  // The queues must fit in the buffers of a fresh socket: make room (the kernel
  // doubles what it is given), and never less than the program had.
  const room = (n: number, had: number) => Math.max(had, n * 2 + 65536) >>> 1;
  setSockInt(fd, SO_SNDBUFFORCE, room(e.outq_len, sk.so_sndbuf ?? 0));
  setSockInt(fd, SO_RCVBUFFORCE, room(e.inq_len, sk.so_rcvbuf ?? 0));
  setInt(fd, TCP.REPAIR_QUEUE, QUEUE.RECV);
  setInt(fd, TCP.QUEUE_SEQ, (e.inq_seq - e.inq_len) | 0);
  setInt(fd, TCP.REPAIR_QUEUE, QUEUE.SEND);
  setInt(fd, TCP.QUEUE_SEQ, (e.outq_seq - e.outq_len) | 0);
  // In repair mode the local port may be shared with the listener it was accepted from.
  sys('bind', fd, addressOf(local), local.length, 0, 0, 0, 'TCP repair bind');
  sys('connect', fd, addressOf(peer), peer.length, 0, 0, 0, 'TCP repair connect');
  const opts: [number, number][] = [[TCPOPT.MAXSEG, e.mss_clamp]];
  if (e.opt_mask & TCPI_OPT.WSCALE) opts.push([TCPOPT.WINDOW, e.snd_wscale | ((e.rcv_wscale ?? 0) << 16)]);
  if (e.opt_mask & TCPI_OPT.SACK) opts.push([TCPOPT.SACK_PERM, 0]);
  if (e.opt_mask & TCPI_OPT.TIMESTAMPS) opts.push([TCPOPT.TIMESTAMP, 0]);
  const ob = Buffer.alloc(opts.length * 8);
  opts.forEach(([c, v], i) => { ob.writeUInt32LE(c, i * 8); ob.writeUInt32LE(v >>> 0, i * 8 + 4); });
  sys('setsockopt', fd, IPPROTO_TCP, TCP.REPAIR_OPTIONS, addressOf(ob), ob.length, 0, 'TCP_REPAIR_OPTIONS');
  if (e.opt_mask & TCPI_OPT.TIMESTAMPS && e.timestamp !== undefined) setInt(fd, TCP.TIMESTAMP, e.timestamp | 0);
  const extra: Buffer = e.extra;
  sendQueue(fd, QUEUE.RECV, extra.subarray(0, e.inq_len));
  // The send queue is data sent but not acknowledged (restored in repair mode:
  // the stack must know it went out, as acks for it may come), then data never
  // sent (restored as ordinary sends, out of repair mode).
  const unsent = Math.min(e.unsq_len ?? 0, e.outq_len);
  const sent = e.outq_len - unsent;
  sendQueue(fd, QUEUE.SEND, extra.subarray(e.inq_len, e.inq_len + sent));
  if (unsent) {
    setInt(fd, TCP.REPAIR, 0);
    sendAll(fd, extra.subarray(e.inq_len + sent, e.inq_len + e.outq_len));
    setInt(fd, TCP.REPAIR, 1);
  }
  if (e.snd_wnd !== undefined) {
    const w = Buffer.alloc(20);
    w.writeUInt32LE(e.snd_wl1, 0); w.writeUInt32LE(e.snd_wnd, 4); w.writeUInt32LE(e.max_window, 8);
    w.writeUInt32LE(e.rcv_wnd, 12); w.writeUInt32LE(e.rcv_wup, 16);
    sysTry('setsockopt', fd, IPPROTO_TCP, TCP.REPAIR_WINDOW, addressOf(w), 20);
  }
  if (e.nodelay) setInt(fd, TCP.NODELAY, 1);
  if (e.cork) setInt(fd, TCP.CORK, 1);
  repairOff(rs);
}
