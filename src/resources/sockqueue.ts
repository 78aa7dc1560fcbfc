// Queued data of sockets: read without being taken (MSG_PEEK with a peek
// offset), kept in sk-queues.img (one sk_packet_entry per datagram, or one
// for a stream's bytes, the data after it), and written back after restore
// by a sender of ours.
import { sys, sysTry, addressOf, abi } from '../sys';
import { StasisError, ErrorCodes, errnoName } from '../errors';
import { defineUnit } from '../unit/unit';
import { filesUnit } from './files';
import { getInt, setIntLocal } from './sockopts';
import type { Msg } from '../images/schema';

const { MSG, SOL, SO, ERRNO, MSGHDR, CMSGHDR, IOVEC, SCM_RIGHTS, SCM_CREDENTIALS, readI32s } = abi;

/**
 * One queued message (a datagram, or a run of a stream's bytes). At dump,
 * `fds` are the files it carries in flight (SCM_RIGHTS), installed in our
 * process by the peek (closed by whoever takes them); in the image and at
 * restore, `files` are their file ids.
 */
export interface Packet { data: Buffer; addr?: Buffer; fds?: number[]; files?: number[] }

const PEEK_BUF = 1 << 17;

function closeAll(fds: readonly number[]): void { for (const x of fds) sysTry('close', x); }

/** One peek at the socket's peek offset: bytes, source address, fds passed, whether credentials came along. */
function peekOnce(fd: number, buf: Buffer): { n: number; addr?: Buffer; flags: number; fds: number[]; creds: boolean } {
  const addr = Buffer.alloc(128);
  const ctl = Buffer.alloc(4096);
  const iov = IOVEC.encode({ base: addressOf(buf), len: BigInt(buf.length) });
  const hdr = MSGHDR.encode({ name: addressOf(addr), namelen: addr.length, iov: addressOf(iov), iovlen: 1n, control: addressOf(ctl), controllen: BigInt(ctl.length), flags: 0 });
  const n = sysTry('recvmsg', fd, addressOf(hdr), MSG.PEEK | MSG.DONTWAIT | MSG.CMSG_CLOEXEC);
  if (n < 0) return { n, flags: 0, fds: [], creds: false };
  const h = MSGHDR.decode(hdr);
  const { fds, creds } = controls(ctl, Number(h.controllen));
  return { n, addr: h.namelen > 2 ? Buffer.from(addr.subarray(0, h.namelen)) : undefined, flags: h.flags, fds, creds };
}

/**
 * Everything queued on the socket, oldest first: a stream's bytes in runs
 * (one ends with each message carrying files), one packet per
 * datagram (with its source address) otherwise. The peek offset is the
 * socket's own: it is set back to "off" (-1) afterwards. Files passed in a
 * message (SCM_RIGHTS) come as fds of ours (`what` names the socket in
 * refusals). `endAtZero`: a read of nothing ends the queue, as on a byte
 * stream; so it is on a seqpacket socket shut for reading, which answers 0
 * (end of file) once nothing is left, where others say EAGAIN. An empty
 * message queued there reads as 0 too: told apart by the credentials each
 * queued message carries (SCM_CREDENTIALS, given while SO_PASSCRED is on,
 * set for the peek), which the end has none of.
 */
export function peekQueue(fd: number, stream: boolean, what = 'a socket', endAtZero = false): Packet[] {
  const out: Packet[] = [];
  const buf = Buffer.alloc(PEEK_BUF);
  sys('setsockopt', fd, SOL.SOCKET, SO.PEEK_OFF, addressOf(Buffer.from([0, 0, 0, 0])), 4);
  const credsOn = endAtZero && !getInt(fd, SOL.SOCKET, SO.PASSCRED);
  if (credsOn) setIntLocal(fd, SOL.SOCKET, SO.PASSCRED, 1);
  try {
    for (;;) {
      const p = peekOnce(fd, buf);
      if (p.n < 0) {
        if (p.n === -ERRNO.EAGAIN) break; // nothing more
        throw new StasisError(ErrorCodes.UNSUPPORTED, `${what}: peeking its queue: ${errnoName(-p.n)}`);
      }
      if (p.flags & MSG.CTRUNC) {
        closeAll(p.fds);
        throw new StasisError(ErrorCodes.UNSUPPORTED, `${what}: a queued message carries more control data (files in flight, SCM_RIGHTS) than stasis reads (4096 bytes); not supported`);
      }
      if (!stream && p.flags & MSG.TRUNC) {
        closeAll(p.fds);
        throw new StasisError(ErrorCodes.UNSUPPORTED, `${what}: a queued message is larger than ${PEEK_BUF} bytes; not supported`);
      }
      if (p.n === 0 && (stream || (endAtZero && !p.creds))) { closeAll(p.fds); break; }
      const data = Buffer.from(buf.subarray(0, p.n));
      if (!stream) out.push({ data, addr: p.addr, fds: p.fds.length ? p.fds : undefined });
      else if (!p.fds.length) out.push({ data });
      else out.push(streamRun(data, p.fds, what));
    }
  } catch (e) {
    for (const x of out) closeAll(x.fds ?? []);
    throw e;
  } finally {
    setIntLocal(fd, SOL.SOCKET, SO.PEEK_OFF, -1);
    if (credsOn) setIntLocal(fd, SOL.SOCKET, SO.PASSCRED, 0);
  }
  return stream ? joinRuns(out) : out;
}

/**
 * A peek of a stream runs on through messages without files and stops after
 * one that carries some; which of the bytes read were that message's the
 * kernel does not show (a peek of any byte before it passes its files too):
 * the run carries the files, as one message. A run that fills the buffer may
 * stop inside the message: its files would come twice.
 */
function streamRun(data: Buffer, fds: number[], what: string): Packet {
  if (data.length === PEEK_BUF) {
    closeAll(fds);
    throw new StasisError(ErrorCodes.UNSUPPORTED, `${what}: a queued message carrying files in flight (SCM_RIGHTS), with what precedes it, is larger than ${PEEK_BUF} bytes; not supported`);
  }
  return { data, fds };
}

/** Neighbouring runs of a stream without files are one run. */
function joinRuns(out: Packet[]): Packet[] {
  const joined: Packet[] = [];
  for (const p of out) {
    const last = joined[joined.length - 1];
    if (last && !last.fds && !p.fds) last.data = Buffer.concat([last.data, p.data]);
    else joined.push(p);
  }
  return joined;
}

/**
 * The fds passed in SCM_RIGHTS messages in `ctl` (a peek installs them in
 * our process), and whether it held credentials (SCM_CREDENTIALS).
 */
function controls(ctl: Buffer, len: number): { fds: number[]; creds: boolean } {
  const fds: number[] = [];
  let creds = false;
  for (let off = 0; off + CMSGHDR.size <= len;) {
    const c = CMSGHDR.decode(ctl, off);
    if (Number(c.len) < CMSGHDR.size) break;
    if (c.level === SOL.SOCKET && c.type === SCM_RIGHTS) fds.push(...readI32s(ctl.subarray(off + CMSGHDR.size), (Number(c.len) - CMSGHDR.size) / 4));
    if (c.level === SOL.SOCKET && c.type === SCM_CREDENTIALS) creds = true;
    off += Math.ceil(Number(c.len) / 8) * 8;
  }
  return { fds, creds };
}

/**
 * Send one message carrying our fds `fds` (SCM_RIGHTS) to the peer; the
 * rest of a stream's bytes, if the first send took only part, goes without.
 */
export function sendWithFds(fd: number, data: Buffer, fds: readonly number[]): void {
  const ctl = Buffer.alloc(Math.ceil((CMSGHDR.size + 4 * fds.length) / 8) * 8);
  CMSGHDR.encode({ len: BigInt(CMSGHDR.size + 4 * fds.length), level: SOL.SOCKET, type: SCM_RIGHTS }).copy(ctl);
  fds.forEach((x, i) => ctl.writeInt32LE(x, CMSGHDR.size + 4 * i));
  const iov = IOVEC.encode({ base: addressOf(data), len: BigInt(data.length) });
  const hdr = MSGHDR.encode({ name: 0n, namelen: 0, iov: addressOf(iov), iovlen: 1n, control: addressOf(ctl), controllen: BigInt(ctl.length), flags: 0 });
  const n = sys('sendmsg', fd, addressOf(hdr), MSG.DONTWAIT);
  if (n < data.length) sendAll(fd, data.subarray(n));
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
      { msg: 'sk_packet_entry' as const, entry: { id_for: id, length: packet.data.length, addr: packet.addr, scm: packet.files?.length ? [{ type: SCM_RIGHTS, rights: packet.files }] : undefined }, payload: packet.data }))),
  }],
  loadAfter: ['files'],
  load(ld) {
    const out = new Map<number, Packet[]>();
    if (!ld.images.exists('sk-queues.img')) return out;
    const { files } = ld.loaded(filesUnit);
    for (const { entry, payload } of ld.images.withPayloads('sk-queues.img', 'SK_QUEUES', 'sk_packet_entry', (e) => e.length)) {
      if (!files.has(entry.id_for)) throw new StasisError(ErrorCodes.BAD_IMAGE, `${ld.images.path('sk-queues.img')}: queued data for file id ${entry.id_for}, absent from files.img`);
      const q = out.get(entry.id_for) ?? [];
      q.push({ data: payload, addr: entry.addr?.length ? entry.addr : undefined, files: rightsOf(ld.images.path('sk-queues.img'), entry, files) });
      out.set(entry.id_for, q);
    }
    return out;
  },
});

/** The file ids a queued message carries (SCM_RIGHTS), each in files.img. */
function rightsOf(where: string, e: Msg<'sk_packet_entry'>, files: ReadonlyMap<number, unknown>): number[] | undefined {
  const ids: number[] = [];
  for (const c of e.scm ?? []) {
    if (c.type !== SCM_RIGHTS) throw new StasisError(ErrorCodes.BAD_IMAGE, `${where}: queued data for file id ${e.id_for}: control message type ${c.type}; only SCM_RIGHTS is supported`);
    for (const r of c.rights ?? []) {
      if (!files.has(r)) throw new StasisError(ErrorCodes.BAD_IMAGE, `${where}: queued data for file id ${e.id_for} carries file id ${r}, absent from files.img`);
      ids.push(r);
    }
  }
  return ids.length ? ids : undefined;
}
