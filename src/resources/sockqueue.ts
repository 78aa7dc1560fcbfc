// Queued data of sockets: read without being taken (MSG_PEEK with a peek
// offset), kept in sk-queues.img (one sk_packet_entry per datagram, or one
// for a stream's bytes, the data after it), and written back after restore
// by a sender of ours.
import { sys, sysTry, addressOf, abi } from '../sys';
import { StasisError, ErrorCodes, errnoName } from '../errors';
import { defineUnit } from '../unit/unit';
import { filesUnit } from './files';
import { getInt, setIntLocal } from './sockopts';

const { MSG, SOL, SO, ERRNO, MSGHDR, CMSGHDR, IOVEC, SCM_RIGHTS, SCM_CREDENTIALS, readI32s } = abi;

export interface Packet { data: Buffer; addr?: Buffer }

/**
 * Everything queued on the socket, oldest first: one Buffer for a byte
 * stream, one per datagram (with its source address) otherwise. The peek
 * offset is the socket's own: it is set back to "off" (-1) afterwards.
 * Files passed in a message (SCM_RIGHTS) are refused (`what` names the
 * socket): they cannot be queued again from here. `endAtZero`: a read of
 * nothing ends the queue, as on a byte stream; so it is on a seqpacket socket
 * shut for reading, which answers 0 (end of file) once nothing is left, where
 * others say EAGAIN. An empty message queued there reads as 0 too: told apart
 * by the credentials each queued message carries (SCM_CREDENTIALS, given
 * while SO_PASSCRED is on, set for the peek), which the end has none of.
 */
export function peekQueue(fd: number, stream: boolean, what = 'a socket', endAtZero = false): Packet[] {
  const out: Packet[] = [];
  const buf = Buffer.alloc(1 << 17);
  const addr = Buffer.alloc(128);
  const ctl = Buffer.alloc(512);
  const iov = IOVEC.encode({ base: addressOf(buf), len: BigInt(buf.length) });
  sys('setsockopt', fd, SOL.SOCKET, SO.PEEK_OFF, addressOf(Buffer.from([0, 0, 0, 0])), 4);
  const credsOn = endAtZero && !getInt(fd, SOL.SOCKET, SO.PASSCRED);
  if (credsOn) setIntLocal(fd, SOL.SOCKET, SO.PASSCRED, 1);
  try {
    for (;;) {
      const hdr = MSGHDR.encode({ name: addressOf(addr), namelen: addr.length, iov: addressOf(iov), iovlen: 1n, control: addressOf(ctl), controllen: BigInt(ctl.length), flags: 0 });
      const n = sysTry('recvmsg', fd, addressOf(hdr), MSG.PEEK | MSG.DONTWAIT | MSG.CMSG_CLOEXEC);
      if (n < 0) {
        if (n === -ERRNO.EAGAIN) break; // nothing more
        throw new StasisError(ErrorCodes.UNSUPPORTED, `peeking a socket queue: ${errnoName(-n)}`);
      }
      const h = MSGHDR.decode(hdr);
      const { passed, creds } = controls(ctl, Number(h.controllen));
      if (passed || h.flags & MSG.CTRUNC) {
        throw new StasisError(ErrorCodes.UNSUPPORTED, `${what}: its queue holds ${passed || 'some'} file descriptor(s) in flight (SCM_RIGHTS); not supported`);
      }
      if (n === 0 && (stream || (endAtZero && !creds))) break;
      const a = h.namelen;
      out.push({ data: Buffer.from(buf.subarray(0, n)), addr: !stream && a > 2 ? Buffer.from(addr.subarray(0, a)) : undefined });
    }
  } finally {
    setIntLocal(fd, SOL.SOCKET, SO.PEEK_OFF, -1);
    if (credsOn) setIntLocal(fd, SOL.SOCKET, SO.PASSCRED, 0);
  }
  if (stream && out.length > 1) return [{ data: Buffer.concat(out.map((x) => x.data)) }];
  return out;
}

/**
 * How many fds SCM_RIGHTS messages in `ctl` passed us (a peek installs them:
 * each closed again), and whether it held credentials (SCM_CREDENTIALS).
 */
function controls(ctl: Buffer, len: number): { passed: number; creds: boolean } {
  let count = 0, creds = false;
  for (let off = 0; off + CMSGHDR.size <= len;) {
    const c = CMSGHDR.decode(ctl, off);
    if (Number(c.len) < CMSGHDR.size) break;
    if (c.level === SOL.SOCKET && c.type === SCM_RIGHTS) {
      const fds = readI32s(ctl.subarray(off + CMSGHDR.size), (Number(c.len) - CMSGHDR.size) / 4);
      for (const x of fds) sysTry('close', x);
      count += fds.length;
    }
    if (c.level === SOL.SOCKET && c.type === SCM_CREDENTIALS) creds = true;
    off += Math.ceil(Number(c.len) / 8) * 8;
  }
  return { passed: count, creds };
}

/** Send `data` on our fd to `to` (a raw sockaddr) or to its peer. */
export function sendAll(fd: number, data: Buffer, to?: Buffer): void {
  let off = 0;
  do {
    const n = sys('sendto', fd, addressOf(data) + BigInt(off), data.length - off, MSG.DONTWAIT, to ? addressOf(to) : 0, to ? to.length : 0);
    off += n;
  } while (off < data.length);
}

/** sk-queues.img: the queued data of every socket, by file id. */
export const skQueuesUnit = defineUnit({
  name: 'sk-queues',
  dumpState: () => [] as { id: number; packet: Packet }[],
  dumpPhases: [{
    name: 'sk-queues', after: ['files'],
    once: (ctx, st) => ctx.write('sk-queues.img', 'SK_QUEUES', st.map(({ id, packet }) => (
      { msg: 'sk_packet_entry' as const, entry: { id_for: id, length: packet.data.length, addr: packet.addr }, payload: packet.data }))),
  }],
  loadAfter: ['files'],
  load(ld) {
    const out = new Map<number, Packet[]>();
    if (!ld.images.exists('sk-queues.img')) return out;
    const { files } = ld.loaded(filesUnit);
    for (const { entry, payload } of ld.images.withPayloads('sk-queues.img', 'SK_QUEUES', 'sk_packet_entry', (e) => e.length)) {
      if (!files.has(entry.id_for)) throw new StasisError(ErrorCodes.BAD_IMAGE, `${ld.images.path('sk-queues.img')}: queued data for file id ${entry.id_for}, absent from files.img`);
      const q = out.get(entry.id_for) ?? [];
      q.push({ data: payload, addr: entry.addr?.length ? entry.addr : undefined });
      out.set(entry.id_for, q);
    }
    return out;
  },
});
