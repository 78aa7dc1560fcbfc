// Blocking TCP sockets of our own, by raw system calls. A dump runs
// synchronously from freeze to release (ptrace, remote calls): its pages go
// to a page server through an fd it writes with plain write(2) while the tree
// is frozen, which Node's event-driven `net` cannot do. Every socket has send
// and receive timeouts (SO_SNDTIMEO/SO_RCVTIMEO; a blocking connect honours
// the send one), so a peer that vanishes fails the transfer instead of
// hanging it; a reset peer fails it at once (EPIPE/ECONNRESET: Node ignores
// SIGPIPE).
import * as fs from 'node:fs';
import { net } from '../node-lazy';
import { addressOf } from './native';
import { sys, sysTry } from './call';
import { AF, SOCK, SOL, SO, TCP, ERRNO, SOCKADDR_IN, SOCKADDR_IN6, TIMEVAL } from './abi';
import { SyscallError } from '../errors';

export interface TcpEndpoint { address: string; port: number }

/** sockaddr of a numeric IPv4 or IPv6 address. */
function sockaddr(address: string, port: number): Buffer {
  const v = net().isIP(address);
  if (v === 4) return SOCKADDR_IN.encode({ family: AF.INET, port, addr: Buffer.from(address.split('.').map(Number)) });
  if (v === 6) return SOCKADDR_IN6.encode({ family: AF.INET6, port, addr: ipv6Bytes(address) });
  throw new Error(`not a numeric IP address: '${address}'`);
}

function ipv6Bytes(a: string): Buffer {
  const [head, tail] = a.includes('::') ? a.split('::') : [a, undefined];
  const words = (s: string | undefined) => (s ? s.split(':') : []);
  let h = words(head), t = words(tail);
  // An embedded IPv4 tail (::ffff:1.2.3.4) is two words.
  const v4 = (w: string[]) => w.flatMap((x) => (x.includes('.') ? (() => { const b = x.split('.').map(Number); return [((b[0] << 8) | b[1]).toString(16), ((b[2] << 8) | b[3]).toString(16)]; })() : [x]));
  h = v4(h); t = v4(t);
  const all = tail === undefined ? h : [...h, ...Array(8 - h.length - t.length).fill('0'), ...t];
  const b = Buffer.alloc(16);
  all.forEach((w, i) => b.writeUInt16BE(parseInt(w, 16), i * 2));
  return b;
}

function setTimeouts(fd: number, ms: number): void {
  const tv = TIMEVAL.encode({ sec: Math.floor(ms / 1000), usec: (ms % 1000) * 1000 });
  sys('setsockopt', fd, SOL.SOCKET, SO.SNDTIMEO, addressOf(tv), tv.length);
  sys('setsockopt', fd, SOL.SOCKET, SO.RCVTIMEO, addressOf(tv), tv.length);
}

/** A longer (or shorter) wait for answers on a connected socket. */
export function setRecvTimeout(fd: number, ms: number): void {
  const tv = TIMEVAL.encode({ sec: Math.floor(ms / 1000), usec: (ms % 1000) * 1000 });
  sys('setsockopt', fd, SOL.SOCKET, SO.RCVTIMEO, addressOf(tv), tv.length);
}

export function setIntOpt(fd: number, level: number, opt: number, v: number): void {
  const b = Buffer.alloc(4);
  b.writeInt32LE(v);
  sys('setsockopt', fd, level, opt, addressOf(b), 4);
}

/** Connect to a numeric address; throws SyscallError (ECONNREFUSED, EINPROGRESS on timeout...). */
export function tcpConnect(to: TcpEndpoint, timeoutMs: number): number {
  const sa = sockaddr(to.address, to.port);
  const fd = sys('socket', net().isIP(to.address) === 6 ? AF.INET6 : AF.INET, SOCK.STREAM | SOCK.CLOEXEC, 0);
  try {
    setTimeouts(fd, timeoutMs);
    for (;;) {
      const r = sysTry('connect', fd, addressOf(sa), sa.length);
      if (r === -ERRNO.EINTR) continue;
      // A blocking connect cut short by SO_SNDTIMEO reports EINPROGRESS.
      if (r === -ERRNO.EINPROGRESS) throw new SyscallError('connect', ERRNO.ETIMEDOUT, `${to.address}:${to.port}`);
      if (r < 0) throw new SyscallError('connect', -r, `${to.address}:${to.port}`);
      break;
    }
    setIntOpt(fd, SOL.TCP, TCP.NODELAY, 1);
    return fd;
  } catch (e) {
    fs.closeSync(fd);
    throw e;
  }
}

/** A listening socket on `at` (port 0: the kernel picks one); returns it and the port. */
export function tcpListen(at: TcpEndpoint): { fd: number; port: number } {
  const sa = sockaddr(at.address, at.port);
  const fd = sys('socket', net().isIP(at.address) === 6 ? AF.INET6 : AF.INET, SOCK.STREAM | SOCK.CLOEXEC, 0);
  try {
    setIntOpt(fd, SOL.SOCKET, SO.REUSEADDR, 1);
    sys('bind', fd, addressOf(sa), sa.length, 0, 0, 0, `${at.address}:${at.port}`);
    sys('listen', fd, 1);
    const got = Buffer.alloc(sa.length);
    const len = Buffer.alloc(4);
    len.writeUInt32LE(got.length);
    sys('getsockname', fd, addressOf(got), addressOf(len));
    return { fd, port: got.readUInt16BE(2) };
  } catch (e) {
    fs.closeSync(fd);
    throw e;
  }
}

/** Wait for one connection (blocking); it gets the same timeouts as a client's. */
export function tcpAccept(listenFd: number, timeoutMs: number): number {
  for (;;) {
    const r = sysTry('accept4', listenFd, 0, 0, SOCK.CLOEXEC);
    if (r === -ERRNO.EINTR) continue;
    if (r < 0) throw new SyscallError('accept', -r);
    setTimeouts(r, timeoutMs);
    setIntOpt(r, SOL.TCP, TCP.NODELAY, 1);
    return r;
  }
}

/** The peer's address of a connected socket, as text. */
export function peerName(fd: number): string {
  const b = Buffer.alloc(SOCKADDR_IN6.size);
  const len = Buffer.alloc(4);
  len.writeUInt32LE(b.length);
  if (sysTry('getpeername', fd, addressOf(b), addressOf(len)) < 0) return '?';
  const port = b.readUInt16BE(2);
  if (b.readUInt16LE(0) === AF.INET) return `${[...b.subarray(4, 8)].join('.')}:${port}`;
  const w = Array.from({ length: 8 }, (_, i) => b.readUInt16BE(8 + i * 2).toString(16));
  return `[${w.join(':')}]:${port}`;
}

/**
 * Read exactly `len` bytes into `buf` at `off`; returns the bytes read, fewer
 * only at end of stream. Errors (reset, timeout: EAGAIN) throw.
 */
export function readFull(fd: number, buf: Buffer, off: number, len: number): number {
  let got = 0;
  while (got < len) {
    let n: number;
    try { n = fs.readSync(fd, buf, off + got, len - got, null); } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EINTR') continue;
      throw e;
    }
    if (n === 0) break;
    got += n;
  }
  return got;
}

/** Write all of `bufs` (gathered: one writev for many pieces where the kernel takes them). */
export function writeFull(fd: number, bufs: Buffer[]): void {
  const rest = bufs.filter((b) => b.length);
  let i = 0;
  while (i < rest.length) {
    let n: number;
    try { n = fs.writevSync(fd, i ? rest.slice(i) : rest); } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EINTR') continue;
      throw e;
    }
    while (n > 0 && i < rest.length) {
      if (n >= rest[i].length) { n -= rest[i].length; i++; }
      else { rest[i] = rest[i].subarray(n); n = 0; }
    }
  }
}
