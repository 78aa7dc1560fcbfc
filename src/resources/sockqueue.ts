// Queued data of sockets, read without being taken (MSG_PEEK with a peek
// offset) and written back after restore by a sender of ours.
import { sys, sysTry, addressOf } from '../sys';
import { SOL_SOCKET, SO } from './sockopts';

const MSG_PEEK = 2, MSG_DONTWAIT = 0x40;

function setPeekOff(fd: number, v: number): void {
  const b = Buffer.alloc(4);
  b.writeInt32LE(v);
  sys('setsockopt', fd, SOL_SOCKET, SO.PEEK_OFF, addressOf(b), 4);
}

/**
 * Everything queued on the socket, oldest first: one Buffer for a byte
 * stream, one per datagram (with its source address) otherwise. The peek
 * offset is the socket's own: it is set back to "off" (-1) afterwards.
 */
export function peekQueue(fd: number, stream: boolean): { data: Buffer; addr?: Buffer }[] {
  const out: { data: Buffer; addr?: Buffer }[] = [];
  const buf = Buffer.alloc(1 << 17);
  const addr = Buffer.alloc(128), alen = Buffer.alloc(4);
  setPeekOff(fd, 0);
  try {
    for (;;) {
      alen.writeUInt32LE(128);
      const n = sysTry('recvfrom', fd, addressOf(buf), buf.length, MSG_PEEK | MSG_DONTWAIT, addressOf(addr), addressOf(alen));
      if (n < 0) {
        if (n === -11) break; // EAGAIN: nothing more
        throw new Error(`peeking a socket queue: errno ${-n}`);
      }
      if (n === 0 && stream) break;
      const a = alen.readUInt32LE(0);
      out.push({ data: Buffer.from(buf.subarray(0, n)), addr: !stream && a > 2 ? Buffer.from(addr.subarray(0, a)) : undefined });
    }
  } finally {
    setPeekOff(fd, -1);
  }
  if (stream && out.length > 1) return [{ data: Buffer.concat(out.map((x) => x.data)) }];
  return out;
}

/** Send `data` on our fd to `to` (a raw sockaddr) or to its peer. */
export function sendAll(fd: number, data: Buffer, to?: Buffer): void {
  let off = 0;
  do {
    const n = sys('sendto', fd, addressOf(data) + BigInt(off), data.length - off, MSG_DONTWAIT, to ? addressOf(to) : 0, to ? to.length : 0);
    off += n;
  } while (off < data.length);
}
