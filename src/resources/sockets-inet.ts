// Inet sockets (IPv4 and IPv6): listening TCP sockets with their address,
// port, backlog and options; UDP sockets bound or connected, with their
// queued datagrams. Established TCP connections need TCP_REPAIR and are
// refused for now.
import { sys, sysTry, addressOf, abi } from '../sys';
import { StasisError, ErrorCodes } from '../errors';
import { FD_TYPES } from './fdtypes';
import { NO_FOWN, type FileKind } from './filekind';
import { grabSocket, getInt, sockName, dumpSockOpts, restoreSockOpts, SO, SOL_SOCKET } from './sockopts';
import { peekQueue, sendAll } from './sockqueue';
import type { Decoded } from '../images/image';
import { repairOn, dumpTcpStream, loadTcpStream, restoreTcpStream } from './tcp-stream';

const AF_INET = 2, AF_INET6 = 10;
const SOCK_STREAM = 1, SOCK_DGRAM = 2, SOCK_NONBLOCK = 0o4000;
const IPPROTO_TCP = 6, IPPROTO_UDP = 17, IPPROTO_IPV6 = 41, IPV6_V6ONLY = 26, TCP_INFO = 11;
export const TCP_STATE = { ESTABLISHED: 1, CLOSE: 7, LISTEN: 10 } as const;
const STATE_NAMES: Record<number, string> = { 1: 'ESTABLISHED', 2: 'SYN_SENT', 3: 'SYN_RECV', 4: 'FIN_WAIT1', 5: 'FIN_WAIT2', 6: 'TIME_WAIT', 7: 'CLOSE', 8: 'CLOSE_WAIT', 9: 'LAST_ACK', 10: 'LISTEN', 11: 'CLOSING' };

function domainOf(pid: number, fd: number): number {
  const s = grabSocket(pid, fd);
  try { return getInt(s, SOL_SOCKET, SO.DOMAIN); } finally { sysTry('close', s); }
}

/** sockaddr → (port, address as the u32 words CRIU stores: raw network-order bytes read little-endian). */
function parseAddr(a: Buffer): { port: number; words: number[] } {
  if (a.length < 4) return { port: 0, words: [] };
  const family = a.readUInt16LE(0);
  const port = a.readUInt16BE(2);
  const bytes = family === AF_INET ? a.subarray(4, 8) : a.subarray(8, 24);
  const words: number[] = [];
  for (let i = 0; i + 4 <= bytes.length; i += 4) words.push(bytes.readUInt32LE(i));
  return { port, words };
}

export function makeSockaddr(family: number, port: number, words: number[]): Buffer {
  const a = Buffer.alloc(family === AF_INET ? 16 : 28);
  a.writeUInt16LE(family, 0);
  a.writeUInt16BE(port, 2);
  const off = family === AF_INET ? 4 : 8;
  words.forEach((w, i) => a.writeUInt32LE(w >>> 0, off + i * 4));
  return a;
}

export const inetSocketKind: FileKind = {
  name: 'inet socket',
  type: FD_TYPES.INETSK,
  field: 'isk',
  match: (d) => d.st.isSocket() && [AF_INET, AF_INET6].includes(domainOf(d.pid, d.fd)),
  dump(ctx, d, id) {
    const s = grabSocket(d.pid, d.fd);
    try {
      const family = getInt(s, SOL_SOCKET, SO.DOMAIN);
      const type = getInt(s, SOL_SOCKET, SO.TYPE);
      const proto = getInt(s, SOL_SOCKET, SO.PROTOCOL);
      if (!(type === SOCK_STREAM && proto === IPPROTO_TCP) && !(type === SOCK_DGRAM && proto === IPPROTO_UDP)) {
        throw new StasisError(ErrorCodes.UNSUPPORTED, `fd ${d.fd} of pid ${d.pid}: inet socket type ${type} protocol ${proto} is not supported yet`);
      }
      const local = parseAddr(sockName(s, false));
      const peerRaw = sockName(s, true);
      const peer = parseAddr(peerRaw);
      let state: number;
      if (type === SOCK_STREAM) {
        const info = Buffer.alloc(8), len = Buffer.alloc(4);
        len.writeUInt32LE(8);
        sys('getsockopt', s, IPPROTO_TCP, TCP_INFO, addressOf(info), addressOf(len));
        state = info.readUInt8(0);
        if (state === TCP_STATE.ESTABLISHED && ctx.opts.tcpEstablished) {
          // Our copy stays open, in repair mode, until the task is gone (then the
          // peer sees nothing) or is let go again (then repair mode is left).
          ctx.repairSockets.push(repairOn(s));
          dumpTcpStream(ctx.opts.dir, d.st.ino, s);
        } else if (state === TCP_STATE.ESTABLISHED) {
          throw new StasisError(ErrorCodes.UNSUPPORTED, `fd ${d.fd} of pid ${d.pid}: established TCP connection (port ${local.port} ↔ ${peer.port}); dump with --tcp-established to take it`);
        } else if (state !== TCP_STATE.LISTEN && state !== TCP_STATE.CLOSE) {
          throw new StasisError(ErrorCodes.UNSUPPORTED, `fd ${d.fd} of pid ${d.pid}: TCP connection in state ${STATE_NAMES[state] ?? state} (port ${local.port} ↔ ${peer.port}) is not supported`);
        }
      } else {
        state = peerRaw.length ? TCP_STATE.ESTABLISHED : TCP_STATE.CLOSE;
        for (const q of peekQueue(s, false)) ctx.skQueues.push({ id, data: q.data, addr: q.addr });
      }
      const diag = ctx.inetDiag(family, proto).get(d.st.ino);
      return {
        id, ino: d.st.ino, family, type, proto, state, src_port: local.port, dst_port: peer.port, flags: d.flags,
        backlog: state === TCP_STATE.LISTEN ? diag?.wqueue ?? 128 : 0, src_addr: local.words, dst_addr: peer.words,
        fown: NO_FOWN, opts: dumpSockOpts(s), v6only: family === AF_INET6 ? getInt(s, IPPROTO_IPV6, IPV6_V6ONLY) !== 0 : undefined,
      };
    } finally {
      if (!ctx.repairSockets.some((r) => r.fd === s)) sysTry('close', s);
    }
  },
  open(ctx, tr, e) {
    const t = tr.task;
    const fd = Number(t.call('socket', e.family, e.type | (e.flags & abi.O.NONBLOCK ? SOCK_NONBLOCK : 0), e.proto));
    if (e.type === SOCK_STREAM && e.state === TCP_STATE.ESTABLISHED) {
      const stream = loadTcpStream(ctx.ckpt.dir, e.ino);
      const s = grabSocket(tr.img.pid, fd);
      try {
        restoreSockOpts(t, fd, e.opts);
        restoreTcpStream(s, stream, makeSockaddr(e.family, e.src_port, e.src_addr ?? []), makeSockaddr(e.family, e.dst_port, e.dst_addr ?? []), e.opts);
      } finally {
        sysTry('close', s);
      }
      return fd;
    }
    restoreSockOpts(t, fd, e.opts);
    if (e.family === AF_INET6 && e.v6only) {
      const b = Buffer.alloc(4);
      b.writeInt32LE(1);
      t.call('setsockopt', fd, IPPROTO_IPV6, IPV6_V6ONLY, t.put(b, 3840), 4);
    }
    const bound = e.src_port !== 0 || (e.src_addr ?? []).some((w: number) => w !== 0);
    if (bound) {
      const a = makeSockaddr(e.family, e.src_port, e.src_addr ?? []);
      const r = t.callRaw('bind', fd, t.put(a, 3584), a.length);
      if (r < 0n) throw new StasisError(ErrorCodes.RESTORE_FAILED, `cannot bind ${e.type === SOCK_STREAM ? 'TCP' : 'UDP'} port ${e.src_port} again (errno ${-r}): is it in use?`);
    }
    if (e.state === TCP_STATE.LISTEN) t.call('listen', fd, e.backlog);
    if (e.type === SOCK_DGRAM && e.state === TCP_STATE.ESTABLISHED) {
      const a = makeSockaddr(e.family, e.dst_port, e.dst_addr ?? []);
      t.call('connect', fd, t.put(a, 3584), a.length);
    }
    const queued = ctx.ckpt.skQueues.get(e.id) ?? [];
    if (queued.length) requeueDatagrams(ctx, e, queued);
    return fd;
  },
};

/**
 * Send the queued datagrams to the restored socket again, from their
 * original source address when it is free (the dumped senders are gone),
 * else from a port of ours (and say so).
 */
function requeueDatagrams(ctx: { warnings: string[] }, e: Decoded, queued: { data: Buffer; addr?: Buffer }[]): void {
  const to = makeSockaddr(e.family, e.src_port, (e.src_addr ?? []).every((w: number) => w === 0) ? loopback(e.family) : e.src_addr);
  for (const q of queued) {
    const s = sys('socket', e.family, SOCK_DGRAM | 0o2000000, IPPROTO_UDP);
    try {
      if (q.addr) {
        const one = Buffer.alloc(4);
        one.writeInt32LE(1);
        sysTry('setsockopt', s, SOL_SOCKET, SO.REUSEADDR, addressOf(one), 4);
        if (sysTry('bind', s, addressOf(q.addr), q.addr.length) < 0) {
          ctx.warnings.push(`UDP port ${e.src_port}: a queued datagram's source ${parseAddr(q.addr).port} is in use; re-sent from another port`);
        }
      }
      sendAll(s, q.data, to);
    } finally {
      sysTry('close', s);
    }
  }
}

function loopback(family: number): number[] {
  return family === AF_INET ? [0x0100007f] : [0, 0, 0, 0x01000000];
}
