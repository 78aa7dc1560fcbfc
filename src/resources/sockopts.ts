// What inet and unix sockets share: a copy of the socket in stasis to ask
// getsockopt about (pidfd_getfd), and the generic socket options
// (sk_opts_entry) with their dump and restore.
import { sys, sysTry, addressOf, pidfdOpen, pidfdGetfd } from '../sys';
import type { RemoteTask } from '../restore/remote';
import type { Entry, Decoded } from '../images/image';

export const SOL_SOCKET = 1;
export const SO = {
  REUSEADDR: 2, TYPE: 3, BROADCAST: 6, SNDBUF: 7, RCVBUF: 8, KEEPALIVE: 9, OOBINLINE: 10, PRIORITY: 12, LINGER: 13,
  REUSEPORT: 15, PASSCRED: 16, RCVLOWAT: 18, RCVTIMEO: 20, SNDTIMEO: 21, ACCEPTCONN: 30, PROTOCOL: 38, DOMAIN: 39,
  PEEK_OFF: 42,
} as const;

/** The task's socket, as an fd of ours (same socket). Close it when done. */
export function grabSocket(pid: number, fd: number): number {
  const pidfd = pidfdOpen(pid);
  try {
    return pidfdGetfd(pidfd, fd);
  } finally {
    sysTry('close', pidfd);
  }
}

export function getInt(fd: number, level: number, opt: number): number {
  const v = Buffer.alloc(4), len = Buffer.alloc(4);
  len.writeUInt32LE(4);
  sys('getsockopt', fd, level, opt, addressOf(v), addressOf(len));
  return v.readInt32LE(0);
}

/** An option this kind of socket may not have (SO_PASSCRED is unix/netlink only since 6.16). */
function getOptional(fd: number, level: number, opt: number): number | undefined {
  const v = Buffer.alloc(4), len = Buffer.alloc(4);
  len.writeUInt32LE(4);
  return sysTry('getsockopt', fd, level, opt, addressOf(v), addressOf(len)) < 0 ? undefined : v.readInt32LE(0);
}

function getTimeval(fd: number, opt: number): [bigint, bigint] {
  const v = Buffer.alloc(16), len = Buffer.alloc(4);
  len.writeUInt32LE(16);
  sys('getsockopt', fd, SOL_SOCKET, opt, addressOf(v), addressOf(len));
  return [v.readBigInt64LE(0), v.readBigInt64LE(8)];
}

/** Local or peer address as raw sockaddr bytes (empty when there is none). */
export function sockName(fd: number, peer: boolean): Buffer {
  const a = Buffer.alloc(128), len = Buffer.alloc(4);
  len.writeUInt32LE(128);
  const r = sysTry(peer ? 'getpeername' : 'getsockname', fd, addressOf(a), addressOf(len));
  if (r < 0) return Buffer.alloc(0);
  return Buffer.from(a.subarray(0, len.readUInt32LE(0)));
}

export function dumpSockOpts(fd: number): Entry {
  const [st, su] = getTimeval(fd, SO.SNDTIMEO);
  const [rt, ru] = getTimeval(fd, SO.RCVTIMEO);
  const linger = Buffer.alloc(8), llen = Buffer.alloc(4);
  llen.writeUInt32LE(8);
  sys('getsockopt', fd, SOL_SOCKET, SO.LINGER, addressOf(linger), addressOf(llen));
  return {
    so_sndbuf: getInt(fd, SOL_SOCKET, SO.SNDBUF), so_rcvbuf: getInt(fd, SOL_SOCKET, SO.RCVBUF),
    so_snd_tmo_sec: st, so_snd_tmo_usec: su, so_rcv_tmo_sec: rt, so_rcv_tmo_usec: ru,
    reuseaddr: getInt(fd, SOL_SOCKET, SO.REUSEADDR) !== 0, so_priority: getInt(fd, SOL_SOCKET, SO.PRIORITY),
    so_rcvlowat: getInt(fd, SOL_SOCKET, SO.RCVLOWAT), so_passcred: (getOptional(fd, SOL_SOCKET, SO.PASSCRED) ?? 0) !== 0,
    so_reuseport: getInt(fd, SOL_SOCKET, SO.REUSEPORT) !== 0, so_broadcast: getInt(fd, SOL_SOCKET, SO.BROADCAST) !== 0,
    so_keepalive: getInt(fd, SOL_SOCKET, SO.KEEPALIVE) !== 0, so_oobinline: getInt(fd, SOL_SOCKET, SO.OOBINLINE),
    so_linger: linger.readInt32LE(0) ? linger.readInt32LE(4) : undefined,
  };
}

function setInt(t: RemoteTask, fd: number, level: number, opt: number, v: number): void {
  const b = Buffer.alloc(4);
  b.writeInt32LE(v);
  t.call('setsockopt', fd, level, opt, t.put(b, 3840), 4);
}

/** Options a program sets on purpose; buffer sizes are left to the kernel's autotuning. */
export function restoreSockOpts(t: RemoteTask, fd: number, o: Decoded): void {
  if (o.reuseaddr) setInt(t, fd, SOL_SOCKET, SO.REUSEADDR, 1);
  if (o.so_reuseport) setInt(t, fd, SOL_SOCKET, SO.REUSEPORT, 1);
  if (o.so_broadcast) setInt(t, fd, SOL_SOCKET, SO.BROADCAST, 1);
  if (o.so_keepalive) setInt(t, fd, SOL_SOCKET, SO.KEEPALIVE, 1);
  if (o.so_passcred) setInt(t, fd, SOL_SOCKET, SO.PASSCRED, 1);
  if (o.so_oobinline) setInt(t, fd, SOL_SOCKET, SO.OOBINLINE, 1);
  if (o.so_priority) setInt(t, fd, SOL_SOCKET, SO.PRIORITY, o.so_priority);
  if (o.so_rcvlowat && o.so_rcvlowat !== 1) setInt(t, fd, SOL_SOCKET, SO.RCVLOWAT, o.so_rcvlowat);
  for (const [opt, sec, usec] of [[SO.SNDTIMEO, o.so_snd_tmo_sec, o.so_snd_tmo_usec], [SO.RCVTIMEO, o.so_rcv_tmo_sec, o.so_rcv_tmo_usec]] as const) {
    if (BigInt(sec) === 0n && BigInt(usec) === 0n) continue;
    const b = Buffer.alloc(16);
    b.writeBigInt64LE(BigInt(sec), 0);
    b.writeBigInt64LE(BigInt(usec), 8);
    t.call('setsockopt', fd, SOL_SOCKET, opt, t.put(b, 3840), 16);
  }
  if (o.so_linger !== undefined) {
    const b = Buffer.alloc(8);
    b.writeInt32LE(1, 0);
    b.writeInt32LE(o.so_linger, 4);
    t.call('setsockopt', fd, SOL_SOCKET, SO.LINGER, t.put(b, 3840), 8);
  }
}
