// Unix sockets of our own process, by raw system calls: socketpair,
// sendmsg/recvmsg of whole packets with fds passed alongside (SCM_RIGHTS),
// the peer's credentials (SO_PEERCRED), poll. Node's `net` knows neither
// SOCK_SEQPACKET framing nor fd passing; `criu swrk` needs both.
import { addressOf } from './native';
import { sys, sysTry } from './call';
import { AF, SOCK, SOL, SO, MSG, SCM_RIGHTS, MSGHDR, CMSGHDR, IOVEC, UCRED, POLLFD, ERRNO } from './abi';
import { SyscallError } from '../errors';

const align8 = (n: number) => (n + 7) & ~7;
/** CMSG_SPACE / CMSG_LEN for `n` fds. */
const cmsgSpace = (n: number) => CMSGHDR.size + align8(n * 4);
const cmsgLen = (n: number) => CMSGHDR.size + n * 4;
/** Most fds one received packet may carry (SCM_MAX_FD is 253). */
const MAX_FDS = 253;

/** A connected pair (AF_UNIX), close-on-exec unless `inheritable`. */
export function socketpair(type: number = SOCK.SEQPACKET, inheritable = false): [number, number] {
  const fds = Buffer.alloc(8);
  sys('socketpair', AF.UNIX, type | (inheritable ? 0 : SOCK.CLOEXEC), 0, addressOf(fds));
  return [fds.readInt32LE(0), fds.readInt32LE(4)];
}

function msghdr(iov: Buffer, control: Buffer | undefined): Buffer {
  return MSGHDR.encode({ iov: addressOf(iov), iovlen: 1, control: control ? addressOf(control) : 0, controllen: control?.length ?? 0 });
}

/**
 * Send one packet (with `fds` as SCM_RIGHTS). Returns bytes sent, or -errno
 * (EPIPE/ECONNRESET when the peer is gone: never a SIGPIPE).
 */
export function sendPacket(fd: number, data: Buffer, fds: number[] = []): number {
  const iov = IOVEC.encode({ base: addressOf(data), len: data.length });
  let control: Buffer | undefined;
  if (fds.length) {
    control = Buffer.alloc(cmsgSpace(fds.length));
    CMSGHDR.encode({ len: cmsgLen(fds.length), level: SOL.SOCKET, type: SCM_RIGHTS }, control);
    fds.forEach((f, i) => control!.writeInt32LE(f, CMSGHDR.size + 4 * i));
  }
  for (;;) {
    const r = sysTry('sendmsg', fd, addressOf(msghdr(iov, control)), MSG.NOSIGNAL);
    if (r !== -ERRNO.EINTR) return r;
  }
}

export interface Packet {
  /** What was copied (at most the `max` asked for). */
  data: Buffer;
  /** The packet's whole length (with `peek`: MSG_TRUNC reports it even when longer than `max`). */
  length: number;
  /** fds received with it (ours now, close-on-exec). */
  fds: number[];
  /** The packet was longer than `data` (MSG_TRUNC). */
  truncated: boolean;
}

/**
 * Receive one packet of at most `max` bytes; `peek` leaves it queued and
 * tells its whole length. Returns -errno on failure (EAGAIN with
 * `dontWait`), or a packet; at end of stream, an empty packet (length 0).
 */
export function recvPacket(fd: number, max: number, opts: { peek?: boolean; dontWait?: boolean } = {}): Packet | number {
  const data = Buffer.alloc(Math.max(max, 1));
  const iov = IOVEC.encode({ base: addressOf(data), len: max });
  const control = Buffer.alloc(cmsgSpace(MAX_FDS));
  const hdr = msghdr(iov, control);
  const flags = MSG.CMSG_CLOEXEC | (opts.peek ? MSG.PEEK | MSG.TRUNC : 0) | (opts.dontWait ? MSG.DONTWAIT : 0);
  let r: number;
  do r = sysTry('recvmsg', fd, addressOf(hdr), flags); while (r === -ERRNO.EINTR);
  if (r < 0) return r;
  const out = MSGHDR.decode(hdr);
  const fds: number[] = [];
  for (let off = 0; off + CMSGHDR.size <= Number(out.controllen);) {
    const c = CMSGHDR.decode(control, off);
    if (Number(c.len) < CMSGHDR.size) break;
    if (c.level === SOL.SOCKET && c.type === SCM_RIGHTS) {
      for (let p = off + CMSGHDR.size; p + 4 <= off + Number(c.len); p += 4) fds.push(control.readInt32LE(p));
    }
    off += align8(Number(c.len));
  }
  const truncated = (out.flags & MSG.TRUNC) !== 0;
  return { data: data.subarray(0, Math.min(r, max)), length: r, fds, truncated };
}

/** The process at the other end of a connected unix socket (as it was at connect/socketpair time). */
export function peerCred(fd: number): { pid: number; uid: number; gid: number } {
  const b = Buffer.alloc(UCRED.size);
  const len = Buffer.alloc(4);
  len.writeUInt32LE(UCRED.size);
  sys('getsockopt', fd, SOL.SOCKET, SO.PEERCRED, addressOf(b), addressOf(len));
  return UCRED.decode(b);
}

/** The socket's type (SOCK_STREAM, SOCK_SEQPACKET...); throws ENOTSOCK for a non-socket. */
export function socketType(fd: number): number {
  const b = Buffer.alloc(4);
  const len = Buffer.alloc(4);
  len.writeUInt32LE(4);
  sys('getsockopt', fd, SOL.SOCKET, SO.TYPE, addressOf(b), addressOf(len), 0, `fd ${fd}`);
  return b.readInt32LE(0);
}

/** poll(2) one fd: the events that came (0 on timeout). */
export function pollOne(fd: number, events: number, timeoutMs: number): number {
  const p = POLLFD.encode({ fd, events });
  for (;;) {
    const r = sysTry('poll', addressOf(p), 1, timeoutMs);
    if (r === -ERRNO.EINTR) continue;
    if (r < 0) throw new SyscallError('poll', -r, `fd ${fd}`);
    return r === 0 ? 0 : POLLFD.decode(p).revents;
  }
}

/** An ioctl that fills one int (SIOCINQ, SIOCOUTQ...): its value. */
export function ioctlInt(fd: number, req: number, detail?: string): number {
  const b = Buffer.alloc(4);
  sys('ioctl', fd, req, addressOf(b), 0, 0, 0, detail ?? `fd ${fd}`);
  return b.readInt32LE(0);
}

export function shutdownSocket(fd: number, how: number): number {
  return sysTry('shutdown', fd, how);
}
