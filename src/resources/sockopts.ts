// What inet and unix sockets share: a copy of the socket in stasis to ask
// getsockopt about (pidfd_getfd), and the generic socket options
// (sk_opts_entry) with their dump and restore.
import { sys, sysTry, addressOf, pidfdOpen, pidfdGetfd, abi } from '../sys';
import { inBuf, type RemoteTask } from '../compel/remote';
import type { Msg } from '../images/schema';

const { SOL, SO, TIMEVAL, LINGER } = abi;

/** The task's socket, as an fd of ours (same socket). Close it when done. */
export function grabSocket(pid: number, fd: number): number {
  const pidfd = pidfdOpen(pid);
  try {
    return pidfdGetfd(pidfd, fd);
  } finally {
    sysTry('close', pidfd);
  }
}

/** getsockopt into a buffer of `len` bytes; the buffer, or undefined when the socket has no such option. */
export function getOpt(fd: number, level: number, opt: number, len: number, optional = false): Buffer | undefined {
  const v = Buffer.alloc(len), l = Buffer.alloc(4);
  l.writeUInt32LE(len);
  const r = sysTry('getsockopt', fd, level, opt, addressOf(v), addressOf(l));
  if (r < 0) {
    if (optional) return undefined;
    sys('getsockopt', fd, level, opt, addressOf(v), addressOf(l)); // throws with the errno
  }
  return v.subarray(0, l.readUInt32LE(0));
}

export function getInt(fd: number, level: number, opt: number): number {
  return getOpt(fd, level, opt, 4)!.readInt32LE(0);
}

/** setsockopt of an int on an fd of ours; -errno on failure. */
export function setIntLocal(fd: number, level: number, opt: number, v: number): number {
  const b = Buffer.alloc(4);
  b.writeInt32LE(v);
  return sysTry('setsockopt', fd, level, opt, addressOf(b), 4);
}

/** Local or peer address as raw sockaddr bytes (empty when there is none). */
export function sockName(fd: number, peer: boolean): Buffer {
  const a = Buffer.alloc(128), len = Buffer.alloc(4);
  len.writeUInt32LE(128);
  const r = sysTry(peer ? 'getpeername' : 'getsockname', fd, addressOf(a), addressOf(len));
  if (r < 0) return Buffer.alloc(0);
  return Buffer.from(a.subarray(0, len.readUInt32LE(0)));
}

export function dumpSockOpts(fd: number): Msg<'sk_opts_entry'> {
  const snd = TIMEVAL.decode(getOpt(fd, SOL.SOCKET, SO.SNDTIMEO, TIMEVAL.size)!);
  const rcv = TIMEVAL.decode(getOpt(fd, SOL.SOCKET, SO.RCVTIMEO, TIMEVAL.size)!);
  const linger = LINGER.decode(getOpt(fd, SOL.SOCKET, SO.LINGER, LINGER.size)!);
  const int = (opt: number) => getInt(fd, SOL.SOCKET, opt);
  // SO_PASSCRED is unix/netlink only since 6.16.
  const passcred = getOpt(fd, SOL.SOCKET, SO.PASSCRED, 4, true);
  return {
    so_sndbuf: int(SO.SNDBUF), so_rcvbuf: int(SO.RCVBUF),
    so_snd_tmo_sec: BigInt.asUintN(64, snd.sec), so_snd_tmo_usec: BigInt.asUintN(64, snd.usec),
    so_rcv_tmo_sec: BigInt.asUintN(64, rcv.sec), so_rcv_tmo_usec: BigInt.asUintN(64, rcv.usec),
    reuseaddr: int(SO.REUSEADDR) !== 0, so_priority: int(SO.PRIORITY),
    so_rcvlowat: int(SO.RCVLOWAT), so_passcred: passcred ? passcred.readInt32LE(0) !== 0 : false,
    so_reuseport: int(SO.REUSEPORT) !== 0, so_broadcast: int(SO.BROADCAST) !== 0,
    so_keepalive: int(SO.KEEPALIVE) !== 0, so_oobinline: int(SO.OOBINLINE),
    so_linger: linger.onoff ? linger.linger : undefined,
  };
}

function setInt(t: RemoteTask, fd: number, level: number, opt: number, v: number): void {
  const b = Buffer.alloc(4);
  b.writeInt32LE(v);
  t.call('setsockopt', fd, level, opt, inBuf(b), 4);
}

/** Options a program sets on purpose; buffer sizes are left to the kernel's autotuning. */
export function restoreSockOpts(t: RemoteTask, fd: number, o: Msg<'sk_opts_entry'>): void {
  if (o.reuseaddr) setInt(t, fd, SOL.SOCKET, SO.REUSEADDR, 1);
  if (o.so_reuseport) setInt(t, fd, SOL.SOCKET, SO.REUSEPORT, 1);
  if (o.so_broadcast) setInt(t, fd, SOL.SOCKET, SO.BROADCAST, 1);
  if (o.so_keepalive) setInt(t, fd, SOL.SOCKET, SO.KEEPALIVE, 1);
  if (o.so_passcred) setInt(t, fd, SOL.SOCKET, SO.PASSCRED, 1);
  if (o.so_oobinline) setInt(t, fd, SOL.SOCKET, SO.OOBINLINE, 1);
  if (o.so_priority) setInt(t, fd, SOL.SOCKET, SO.PRIORITY, o.so_priority);
  if (o.so_rcvlowat && o.so_rcvlowat !== 1) setInt(t, fd, SOL.SOCKET, SO.RCVLOWAT, o.so_rcvlowat);
  for (const [opt, sec, usec] of [[SO.SNDTIMEO, o.so_snd_tmo_sec, o.so_snd_tmo_usec], [SO.RCVTIMEO, o.so_rcv_tmo_sec, o.so_rcv_tmo_usec]] as const) {
    if (sec === 0n && usec === 0n) continue;
    t.call('setsockopt', fd, SOL.SOCKET, opt, inBuf(TIMEVAL.encode({ sec, usec })), TIMEVAL.size);
  }
  if (o.so_linger !== undefined) t.call('setsockopt', fd, SOL.SOCKET, SO.LINGER, inBuf(LINGER.encode({ onoff: 1, linger: o.so_linger })), LINGER.size);
}
