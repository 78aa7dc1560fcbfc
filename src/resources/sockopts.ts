// What inet and unix sockets share: a copy of the socket in stasis to ask
// getsockopt about (pidfd_getfd), and the generic socket options
// (sk_opts_entry) with their dump and restore.
import { sys, sysTry, addressOf, abi, grabFd } from '../sys';
import { inBuf, linked, type RemoteTask } from '../compel/remote';
import { StasisError, ErrorCodes } from '../errors';
import type { Msg } from '../images/schema';
import { SK_SHUTDOWN } from '../images/criu';

const { SOL, SO, TCP, IPPROTO, TIMEVAL, LINGER, SOCK_FPROG, SOCK_FILTER_SIZE, SOCK_BUF_LOCK, IFNAMSIZ, SHUT, ERRNO } = abi;

/** The task's socket, as an fd of ours (same socket). Close it when done. */
export function grabSocket(pid: number, fd: number): number {
  return grabFd(pid, fd);
}

/** The socket family (SO_DOMAIN) of the task's fd. */
export function socketDomain(pid: number, fd: number): number {
  const s = grabSocket(pid, fd);
  try { return getInt(s, SOL.SOCKET, SO.DOMAIN); } finally { sysTry('close', s); }
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

/** The classic BPF filter attached to the socket (SO_ATTACH_FILTER), one u64 per instruction. */
function dumpFilter(fd: number): bigint[] {
  const l = Buffer.alloc(4);
  // With no room, SO_GET_FILTER gives the number of instructions.
  if (sysTry('getsockopt', fd, SOL.SOCKET, SO.GET_FILTER, 0, addressOf(l)) < 0) return [];
  const n = l.readUInt32LE(0);
  if (!n) return [];
  // Its length is counted in instructions both ways.
  const v = Buffer.alloc(n * SOCK_FILTER_SIZE);
  sys('getsockopt', fd, SOL.SOCKET, SO.GET_FILTER, addressOf(v), addressOf(l));
  return Array.from({ length: l.readUInt32LE(0) }, (_, i) => v.readBigUInt64LE(i * SOCK_FILTER_SIZE));
}

/**
 * The options of the socket. `queued`: it has queued data, which goes back
 * through a sender of ours, and so through a filter of its own: refused with
 * one (`what` names the socket).
 */
export function dumpSockOpts(fd: number, queued = false, what = 'a socket'): Msg<'sk_opts_entry'> {
  const filter = dumpFilter(fd);
  if (filter.length && queued) throw new StasisError(ErrorCodes.UNSUPPORTED, `${what} has a socket filter (SO_ATTACH_FILTER) and queued data; not supported`);
  if (filter.length && getInt(fd, SOL.SOCKET, SO.LOCK_FILTER)) throw new StasisError(ErrorCodes.UNSUPPORTED, `${what} has its socket filter locked (SO_LOCK_FILTER); not supported`);
  const dev = getOpt(fd, SOL.SOCKET, SO.BINDTODEVICE, IFNAMSIZ, true);
  const bufLock = getOpt(fd, SOL.SOCKET, SO.BUF_LOCK, 4, true)?.readInt32LE(0) ?? 0;
  // Keepalive probes' count and timing (TCP's own options; used once SO_KEEPALIVE is on, now or later).
  const tcp = getInt(fd, SOL.SOCKET, SO.PROTOCOL) === IPPROTO.TCP && getInt(fd, SOL.SOCKET, SO.TYPE) === abi.SOCK.STREAM;
  const snd = TIMEVAL.decode(getOpt(fd, SOL.SOCKET, SO.SNDTIMEO, TIMEVAL.size)!);
  const rcv = TIMEVAL.decode(getOpt(fd, SOL.SOCKET, SO.RCVTIMEO, TIMEVAL.size)!);
  const linger = LINGER.decode(getOpt(fd, SOL.SOCKET, SO.LINGER, LINGER.size)!);
  const int = (opt: number) => getInt(fd, SOL.SOCKET, opt);
  // SO_PASSCRED is unix/netlink only since 6.16.
  const passcred = getOpt(fd, SOL.SOCKET, SO.PASSCRED, 4, true);
  const passsec = getOpt(fd, SOL.SOCKET, SO.PASSSEC, 4, true);
  return {
    so_sndbuf: int(SO.SNDBUF), so_rcvbuf: int(SO.RCVBUF),
    so_snd_tmo_sec: BigInt.asUintN(64, snd.sec), so_snd_tmo_usec: BigInt.asUintN(64, snd.usec),
    so_rcv_tmo_sec: BigInt.asUintN(64, rcv.sec), so_rcv_tmo_usec: BigInt.asUintN(64, rcv.usec),
    reuseaddr: int(SO.REUSEADDR) !== 0, so_priority: int(SO.PRIORITY),
    so_rcvlowat: int(SO.RCVLOWAT), so_passcred: passcred ? passcred.readInt32LE(0) !== 0 : false,
    so_passsec: passsec?.readInt32LE(0) ? true : undefined, so_dontroute: int(SO.DONTROUTE) ? true : undefined,
    so_no_check: int(SO.NO_CHECK) ? true : undefined,
    so_reuseport: int(SO.REUSEPORT) !== 0, so_broadcast: int(SO.BROADCAST) !== 0,
    so_keepalive: int(SO.KEEPALIVE) !== 0, so_oobinline: int(SO.OOBINLINE),
    so_linger: linger.onoff ? linger.linger : undefined,
    so_filter: filter, so_bound_dev: dev?.length ? dev.toString('latin1').replace(/\0.*$/s, '') || undefined : undefined,
    so_mark: int(SO.MARK) || undefined, so_buf_lock: bufLock || undefined,
    ...(tcp ? { tcp_keepcnt: getInt(fd, SOL.TCP, TCP.KEEPCNT), tcp_keepidle: getInt(fd, SOL.TCP, TCP.KEEPIDLE), tcp_keepintvl: getInt(fd, SOL.TCP, TCP.KEEPINTVL) } : {}),
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
  if (o.so_passsec) setInt(t, fd, SOL.SOCKET, SO.PASSSEC, 1);
  if (o.so_dontroute) setInt(t, fd, SOL.SOCKET, SO.DONTROUTE, 1);
  if (o.so_no_check) setInt(t, fd, SOL.SOCKET, SO.NO_CHECK, 1);
  if (o.so_oobinline) setInt(t, fd, SOL.SOCKET, SO.OOBINLINE, 1);
  if (o.so_priority) setInt(t, fd, SOL.SOCKET, SO.PRIORITY, o.so_priority);
  if (o.so_rcvlowat && o.so_rcvlowat !== 1) setInt(t, fd, SOL.SOCKET, SO.RCVLOWAT, o.so_rcvlowat);
  for (const [opt, sec, usec] of [[SO.SNDTIMEO, o.so_snd_tmo_sec, o.so_snd_tmo_usec], [SO.RCVTIMEO, o.so_rcv_tmo_sec, o.so_rcv_tmo_usec]] as const) {
    if (sec === 0n && usec === 0n) continue;
    t.call('setsockopt', fd, SOL.SOCKET, opt, inBuf(TIMEVAL.encode({ sec, usec })), TIMEVAL.size);
  }
  if (o.so_linger !== undefined) t.call('setsockopt', fd, SOL.SOCKET, SO.LINGER, inBuf(LINGER.encode({ onoff: 1, linger: o.so_linger })), LINGER.size);
  if (o.so_mark) setInt(t, fd, SOL.SOCKET, SO.MARK, o.so_mark);
  if (o.tcp_keepcnt) setInt(t, fd, SOL.TCP, TCP.KEEPCNT, o.tcp_keepcnt);
  if (o.tcp_keepidle) setInt(t, fd, SOL.TCP, TCP.KEEPIDLE, o.tcp_keepidle);
  if (o.tcp_keepintvl) setInt(t, fd, SOL.TCP, TCP.KEEPINTVL, o.tcp_keepintvl);
  if (o.so_bound_dev) { const name = Buffer.from(o.so_bound_dev + '\0', 'latin1'); t.call('setsockopt', fd, SOL.SOCKET, SO.BINDTODEVICE, inBuf(name), name.length); }
  // Sizes the program set (the kernel doubles what is asked: ask for half); then the lock bits as they were.
  const lock = o.so_buf_lock ?? 0;
  if (lock & SOCK_BUF_LOCK.SNDBUF) setInt(t, fd, SOL.SOCKET, SO.SNDBUFFORCE, Math.floor(o.so_sndbuf / 2));
  if (lock & SOCK_BUF_LOCK.RCVBUF) setInt(t, fd, SOL.SOCKET, SO.RCVBUFFORCE, Math.floor(o.so_rcvbuf / 2));
  if (lock) setInt(t, fd, SOL.SOCKET, SO.BUF_LOCK, lock);
  if (o.so_filter?.length) {
    const prog = Buffer.alloc(o.so_filter.length * SOCK_FILTER_SIZE);
    o.so_filter.forEach((x, i) => prog.writeBigUInt64LE(BigInt.asUintN(64, x), i * SOCK_FILTER_SIZE));
    const code = inBuf(prog);
    t.call('setsockopt', fd, SOL.SOCKET, SO.ATTACH_FILTER, linked(SOCK_FPROG.size, [code], (at) => SOCK_FPROG.encode({ len: o.so_filter!.length, filter: at(code) })), SOCK_FPROG.size);
  }
}

/** sk_shutdown bits (as sock_diag and the image have them: 1 receive, 2 send) → shutdown()'s how. */
const SHUT_HOW: Record<number, number> = { [SK_SHUTDOWN.READ]: SHUT.RD, [SK_SHUTDOWN.WRITE]: SHUT.WR, [SK_SHUTDOWN.BOTH]: SHUT.RDWR };

/**
 * The directions the program shut down (`bits`: sk_shutdown), shut again.
 * After any queued data went back in: a receiver shut for reading takes no
 * more. An unconnected inet socket keeps the bits but answers ENOTCONN.
 */
export function restoreShutdown(t: RemoteTask, fd: number, bits: number | undefined, what: string): void {
  if (!bits) return;
  const how = SHUT_HOW[bits];
  if (how === undefined) throw new StasisError(ErrorCodes.BAD_IMAGE, `${what}: shutdown state ${bits} is not one of sk_shutdown's`);
  const r = t.callRaw('shutdown', fd, how);
  if (r < 0n && r !== BigInt(-ERRNO.ENOTCONN)) throw new StasisError(ErrorCodes.RESTORE_FAILED, `${what}: shutdown(${how}) failed (errno ${-r})`);
}
