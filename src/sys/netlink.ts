// netlink dump requests (sock_diag): send one request, read every reply
// message until NLMSG_DONE. Payloads are handed out as copies, attributes
// walked with their 4-byte padding.
import { sys, sysTry } from './call';
import { addressOf } from './native';
import { SyscallError } from '../errors';
import { AF, SOCK, NLM_F, NLMSG, NLMSG_ALIGNTO } from './abi/socket';
import { NLMSGHDR, NLATTR } from './abi/structs';

const align = (n: number) => (n + NLMSG_ALIGNTO - 1) & ~(NLMSG_ALIGNTO - 1);

/** Send `body` as a dump request of `type` on a `protocol` netlink socket; `handle` gets each reply's payload. */
export function netlinkDump(protocol: number, type: number, body: Buffer, handle: (payload: Buffer) => void): void {
  const fd = sys('socket', AF.NETLINK, SOCK.DGRAM | SOCK.CLOEXEC, protocol);
  try {
    const req = Buffer.alloc(NLMSGHDR.size + body.length);
    NLMSGHDR.encode({ len: req.length, type, flags: NLM_F.REQUEST | NLM_F.DUMP, seq: 1 }, req);
    body.copy(req, NLMSGHDR.size);
    sys('sendto', fd, addressOf(req), req.length, 0, 0, 0);
    const buf = Buffer.alloc(1 << 16);
    for (;;) {
      const n = sys('recvfrom', fd, addressOf(buf), buf.length, 0, 0, 0);
      for (let off = 0; off + NLMSGHDR.size <= n;) {
        const h = NLMSGHDR.decode(buf, off);
        if (h.len < NLMSGHDR.size || h.type === NLMSG.DONE) return;
        if (h.type === NLMSG.ERROR) {
          const err = buf.readInt32LE(off + NLMSGHDR.size); // struct nlmsgerr starts with the (negative) errno
          if (err === 0) return;
          throw new SyscallError('netlink', -err, `dump request ${type}`);
        }
        handle(Buffer.from(buf.subarray(off + NLMSGHDR.size, off + h.len)));
        off += align(h.len);
      }
    }
  } finally {
    sysTry('close', fd);
  }
}

/** The attributes after a fixed-size message in `p` (from `start`): type and value of each. */
export function* netlinkAttrs(p: Buffer, start: number): Generator<{ type: number; value: Buffer }> {
  for (let off = start; off + NLATTR.size <= p.length;) {
    const a = NLATTR.decode(p, off);
    if (a.len < NLATTR.size) return;
    yield { type: a.type, value: p.subarray(off + NLATTR.size, off + a.len) };
    off += align(a.len);
  }
}
