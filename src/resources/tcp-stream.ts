// Established TCP connections (--tcp-established), through TCP_REPAIR: the
// sequence numbers, both queues (received but unread; sent but not acked or
// not yet sent), the negotiated options and the windows go into
// tcp-stream-INO.img; restore builds a socket in repair mode that is
// ESTABLISHED without a handshake and carries on from those numbers.
//
// Both halves work on stasis's own copy of the task's socket (pidfd_getfd):
// same socket, so no remote calls are needed. TCP_REPAIR needs CAP_NET_ADMIN.
import { sys, sysTry, addressOf, abi, ioctlInt } from '../sys';
import type { Msg } from '../images/schema';
import type { ImageReader } from '../images/image';
import type { DumpCtx } from '../unit/dump-ctx';
import { StasisError, ErrorCodes } from '../errors';
import { getInt, getOpt, setIntLocal } from './sockopts';
import { withoutFin, sendQueueStart, restoreFin } from './tcp-closing';

const { SOL, SO, TCP, TCP_REPAIR_QUEUE: QUEUE, TCPOPT, TCPI_OPT, SIOC, MSG, TCP_INFO_HEAD, TCP_REPAIR_WINDOW, TCP_REPAIR_OPT } = abi;

function setTcp(fd: number, opt: number, v: number): void {
  const b = Buffer.alloc(4);
  b.writeInt32LE(v);
  sys('setsockopt', fd, SOL.TCP, opt, addressOf(b), 4, 0, `TCP option ${opt}`);
}

/** Our copy of a socket held in repair mode, and the program's SO_REUSEADDR. */
export interface RepairSocket { fd: number; reuse: number }

/** Put our copy of the socket in repair mode (the connection then sends nothing). */
export function repairOn(fd: number): RepairSocket {
  // Repair mode forces address reuse on, and leaving it clears it: keep the program's setting.
  const reuse = getInt(fd, SOL.SOCKET, SO.REUSEADDR);
  setTcp(fd, TCP.REPAIR, 1);
  return { fd, reuse };
}

/** Leave repair mode (a connection going on as before), with the program's SO_REUSEADDR back. */
export function repairOff(s: RepairSocket): number {
  const r = setIntLocal(s.fd, SOL.TCP, TCP.REPAIR, 0);
  if (s.reuse) setIntLocal(s.fd, SOL.SOCKET, SO.REUSEADDR, 1);
  return r;
}

function peekQueue(fd: number, queue: number, len: number): Buffer {
  setTcp(fd, TCP.REPAIR_QUEUE, queue);
  const out = Buffer.alloc(len);
  const got = len > 0 ? sys('recvfrom', fd, addressOf(out), len, MSG.PEEK | MSG.DONTWAIT, 0, 0) : 0;
  if (got !== len) throw new StasisError(ErrorCodes.UNSUPPORTED, `TCP repair: read ${got} of ${len} queued bytes`);
  return out;
}

export function tcpStreamFile(ino: number): string {
  return `tcp-stream-${ino.toString(16)}.img`;
}

/** Dump one connection, established or with our FIN queued (our copy `fd`, already in repair mode). */
export function dumpTcpStream(ctx: DumpCtx, ino: number, fd: number, state: number): void {
  const inqLen = ioctlInt(fd, SIOC.INQ);
  const { outq: outqLen, unsq: unsqLen } = withoutFin(state, ioctlInt(fd, SIOC.OUTQ), ioctlInt(fd, SIOC.OUTQNSD));
  setTcp(fd, TCP.REPAIR_QUEUE, QUEUE.RECV);
  const inqSeq = getInt(fd, SOL.TCP, TCP.QUEUE_SEQ) >>> 0;
  setTcp(fd, TCP.REPAIR_QUEUE, QUEUE.SEND);
  const outqSeq = getInt(fd, SOL.TCP, TCP.QUEUE_SEQ) >>> 0;
  const inq = peekQueue(fd, QUEUE.RECV, inqLen);
  const outq = peekQueue(fd, QUEUE.SEND, outqLen);
  const info = TCP_INFO_HEAD.decode(getOpt(fd, SOL.TCP, TCP.INFO, TCP_INFO_HEAD.size)!);
  const win = TCP_REPAIR_WINDOW.decode(getOpt(fd, SOL.TCP, TCP.REPAIR_WINDOW, TCP_REPAIR_WINDOW.size)!);
  const e: Msg<'tcp_stream_entry'> = {
    inq_len: inqLen, inq_seq: inqSeq, outq_len: outqLen, outq_seq: outqSeq,
    opt_mask: info.options & (TCPI_OPT.TIMESTAMPS | TCPI_OPT.SACK | TCPI_OPT.WSCALE),
    snd_wscale: info.wscale & 0xf, rcv_wscale: info.wscale >> 4, mss_clamp: getInt(fd, SOL.TCP, TCP.MAXSEG),
    timestamp: getInt(fd, SOL.TCP, TCP.TIMESTAMP) >>> 0, cork: getInt(fd, SOL.TCP, TCP.CORK) !== 0, nodelay: getInt(fd, SOL.TCP, TCP.NODELAY) !== 0,
    unsq_len: unsqLen, snd_wl1: win.snd_wl1, snd_wnd: win.snd_wnd, max_window: win.max_window, rcv_wnd: win.rcv_wnd, rcv_wup: win.rcv_wup,
  };
  ctx.write(tcpStreamFile(ino), 'TCP_STREAM', [{ msg: 'tcp_stream_entry', entry: e, payload: Buffer.concat([inq, outq]) }]);
}

export function loadTcpStream(images: ImageReader, ino: number): { entry: Msg<'tcp_stream_entry'>; payload: Buffer } {
  const [s] = images.withPayloads(tcpStreamFile(ino), 'TCP_STREAM', 'tcp_stream_entry', (d) => d.inq_len + d.outq_len);
  if (!s) throw new StasisError(ErrorCodes.BAD_IMAGE, `${images.path(tcpStreamFile(ino))}: empty`);
  return s;
}

/** Segments of at most this size: one repair-mode send makes one skb. */
const CHUNK = 64 * 1024;

function sendAll(fd: number, data: Buffer): void {
  for (let off = 0; off < data.length; ) {
    // Never block: the buffers were made big enough, so EAGAIN here is a real failure.
    off += sys('sendto', fd, addressOf(data) + BigInt(off), Math.min(CHUNK, data.length - off), MSG.DONTWAIT, 0, 0, 'TCP queue');
  }
}

function sendQueue(fd: number, queue: number, data: Buffer): void {
  setTcp(fd, TCP.REPAIR_QUEUE, queue);
  sendAll(fd, data);
}

/**
 * Make our copy `fd` of a fresh socket the dumped connection: repair mode,
 * sequence numbers, bind and connect (no handshake in repair mode), options,
 * queued data, windows. It stays in repair mode (sending nothing) until the
 * network lock is gone and the tasks are about to run: then repairOff().
 */
export function restoreTcpStream(fd: number, s: { entry: Msg<'tcp_stream_entry'>; payload: Buffer }, local: Buffer, peer: Buffer, sk: Msg<'sk_opts_entry'>, state: number, what: string): RepairSocket {
  const e = s.entry;
  const rs = repairOn(fd);
  rs.reuse = sk.reuseaddr ? 1 : 0;
  // The queues must fit in the buffers of a fresh socket: make room (the kernel
  // doubles what it is given), and never less than the program had.
  const room = (n: number, had: number) => Math.max(had, n * 2 + 65536) >>> 1;
  setIntLocal(fd, SOL.SOCKET, SO.SNDBUFFORCE, room(e.outq_len, sk.so_sndbuf ?? 0));
  setIntLocal(fd, SOL.SOCKET, SO.RCVBUFFORCE, room(e.inq_len, sk.so_rcvbuf ?? 0));
  setTcp(fd, TCP.REPAIR_QUEUE, QUEUE.RECV);
  setTcp(fd, TCP.QUEUE_SEQ, (e.inq_seq - e.inq_len) | 0);
  setTcp(fd, TCP.REPAIR_QUEUE, QUEUE.SEND);
  setTcp(fd, TCP.QUEUE_SEQ, sendQueueStart(state, e));
  // In repair mode the local port may be shared with the listener it was accepted from.
  sys('bind', fd, addressOf(local), local.length, 0, 0, 0, 'TCP repair bind');
  sys('connect', fd, addressOf(peer), peer.length, 0, 0, 0, 'TCP repair connect');
  const opts: [number, number][] = [[TCPOPT.MAXSEG, e.mss_clamp]];
  if (e.opt_mask & TCPI_OPT.WSCALE) opts.push([TCPOPT.WINDOW, e.snd_wscale | ((e.rcv_wscale ?? 0) << 16)]);
  if (e.opt_mask & TCPI_OPT.SACK) opts.push([TCPOPT.SACK_PERM, 0]);
  if (e.opt_mask & TCPI_OPT.TIMESTAMPS) opts.push([TCPOPT.TIMESTAMP, 0]);
  const ob = Buffer.concat(opts.map(([c, v]) => TCP_REPAIR_OPT.encode({ opt_code: c, opt_val: v })));
  sys('setsockopt', fd, SOL.TCP, TCP.REPAIR_OPTIONS, addressOf(ob), ob.length, 0, 'TCP_REPAIR_OPTIONS');
  if (e.opt_mask & TCPI_OPT.TIMESTAMPS && e.timestamp !== undefined) setTcp(fd, TCP.TIMESTAMP, e.timestamp | 0);
  sendQueue(fd, QUEUE.RECV, s.payload.subarray(0, e.inq_len));
  // The send queue is data sent but not acknowledged (restored in repair mode:
  // the stack must know it went out, as acks for it may come), then data never
  // sent (restored as ordinary sends, out of repair mode).
  const unsent = Math.min(e.unsq_len ?? 0, e.outq_len);
  const sent = e.outq_len - unsent;
  sendQueue(fd, QUEUE.SEND, s.payload.subarray(e.inq_len, e.inq_len + sent));
  if (unsent) {
    setTcp(fd, TCP.REPAIR, 0);
    sendAll(fd, s.payload.subarray(e.inq_len + sent, e.inq_len + e.outq_len));
    setTcp(fd, TCP.REPAIR, 1);
  }
  if (e.snd_wnd !== undefined) {
    const w = TCP_REPAIR_WINDOW.encode({ snd_wl1: e.snd_wl1, snd_wnd: e.snd_wnd, max_window: e.max_window, rcv_wnd: e.rcv_wnd, rcv_wup: e.rcv_wup });
    sysTry('setsockopt', fd, SOL.TCP, TCP.REPAIR_WINDOW, addressOf(w), w.length);
  }
  if (e.nodelay) setTcp(fd, TCP.NODELAY, 1);
  if (e.cork) setTcp(fd, TCP.CORK, 1);
  restoreFin(fd, state, unsent, what);
  return rs;
}
