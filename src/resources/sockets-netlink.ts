// Netlink sockets: protocol, the port id bound (chosen or given by the
// kernel), the multicast groups joined, the peer connected to, and the
// socket's netlink flags (netlink_sk_entry, as criu; the flags in a field of
// ours). Messages queued to read were sent by the kernel or by a peer that
// is gone: refused, as no sender of ours could queue them again.
import { sys, sysTry, addressOf, abi, pollOne } from '../sys';
import { inBuf } from '../compel/remote';
import { StasisError, ErrorCodes } from '../errors';
import { FD_TYPES, NO_FOWN } from '../images/criu';
import { defineFileUnit } from '../unit/unit';
import { grabSocket, getInt, dumpSockOpts, restoreSockOpts, socketDomain, sockName } from './sockopts';

const { AF, SOCK, SOL, SO, SOL_NETLINK, NETLINK_OPT, SOCKADDR_NL, NETLINK_CONNECTED } = abi;

/** Boolean netlink options the kernel lets a socket read back. */
const FLAG_OPTS = [NETLINK_OPT.PKTINFO, NETLINK_OPT.BROADCAST_ERROR, NETLINK_OPT.NO_ENOBUFS, NETLINK_OPT.LISTEN_ALL_NSID, NETLINK_OPT.CAP_ACK, NETLINK_OPT.EXT_ACK, NETLINK_OPT.GET_STRICT_CHK];

/** Every group joined, as u32 words (group g is bit (g-1)%32 of word (g-1)/32). */
function groupsOf(s: number): number[] {
  let room = 16;
  for (;;) {
    const b = Buffer.alloc(room), l = Buffer.alloc(4);
    l.writeUInt32LE(room);
    sys('getsockopt', s, SOL_NETLINK, NETLINK_OPT.LIST_MEMBERSHIPS, addressOf(b), addressOf(l));
    const need = l.readUInt32LE(0);
    if (need > room) { room = need; continue; }
    const words = Array.from({ length: need / 4 }, (_, i) => b.readUInt32LE(i * 4));
    while (words.length && words[words.length - 1] === 0) words.pop();
    return words;
  }
}

/** A group bitmask's single group number (connect() takes one: the lowest bit set). */
function groupNumber(mask: number): number {
  for (let g = 0; g < 32; g++) if (mask & (1 << g)) return g + 1;
  return 0;
}

export const netlinkSocketUnit = defineFileUnit({
  name: 'netlink sockets',
  file: {
    type: FD_TYPES.NETLINKSK,
    field: 'nlsk',
    match: (d) => d.st.isSocket() && socketDomain(d.pid, d.fd) === AF.NETLINK,
    dump(_ctx, d, id) {
      const what = `fd ${d.fd} of pid ${d.pid}: netlink socket ${d.st.ino}`;
      const s = grabSocket(d.pid, d.fd);
      try {
        if (pollOne(s, abi.POLL.IN, 0) & abi.POLL.IN) throw new StasisError(ErrorCodes.UNSUPPORTED, `${what} has messages queued to read; not supported`);
        const type = getInt(s, SOL.SOCKET, SO.TYPE);
        if (type !== SOCK.RAW && type !== SOCK.DGRAM) throw new StasisError(ErrorCodes.UNSUPPORTED, `${what}: type ${type} is not supported`);
        const local = SOCKADDR_NL.decode(Buffer.concat([sockName(s, false), Buffer.alloc(SOCKADDR_NL.size)]));
        const peer = SOCKADDR_NL.decode(Buffer.concat([sockName(s, true), Buffer.alloc(SOCKADDR_NL.size)]));
        const dstGroup = groupNumber(peer.groups);
        const nl_flags = FLAG_OPTS.filter((o) => getInt(s, SOL_NETLINK, o) !== 0);
        return {
          id, ino: d.st.ino, protocol: getInt(s, SOL.SOCKET, SO.PROTOCOL), state: peer.pid || dstGroup ? NETLINK_CONNECTED : 0,
          flags: d.flags, portid: local.pid, groups: groupsOf(s), dst_portid: peer.pid, dst_group: dstGroup,
          fown: NO_FOWN, opts: dumpSockOpts(s, false, what), nl_flags, ...(type === SOCK.DGRAM ? { nl_type: type } : {}),
        };
      } finally {
        sysTry('close', s);
      }
    },
    open(_ctx, tr, e) {
      const t = tr.task;
      // criu's image keeps no type (it makes SOCK_RAW); ours says SOCK_DGRAM where it was.
      const type = e.nl_type ?? SOCK.RAW;
      if (type !== SOCK.RAW && type !== SOCK.DGRAM) throw new StasisError(ErrorCodes.BAD_IMAGE, `netlink socket ${e.ino}: type ${type} is not a netlink socket's`);
      const fd = t.callNum('socket', AF.NETLINK, type | (e.flags & abi.O.NONBLOCK ? SOCK.NONBLOCK : 0), e.protocol);
      const groups = e.groups ?? [];
      if (e.portid) {
        const a = SOCKADDR_NL.encode({ family: AF.NETLINK, pid: e.portid, groups: groups[0] ?? 0 });
        const r = t.callRaw('bind', fd, inBuf(a), a.length);
        if (r < 0n) throw new StasisError(ErrorCodes.RESTORE_FAILED, `netlink socket ${e.ino}: cannot bind port id ${e.portid} again (errno ${-r}): is it in use?`);
      }
      // Groups past the first 32 are joined one by one.
      for (let w = 1; w < groups.length; w++) {
        for (let b = 0; b < 32; b++) {
          if (groups[w] & (1 << b)) t.call('setsockopt', fd, SOL_NETLINK, NETLINK_OPT.ADD_MEMBERSHIP, inBuf(abi.i32s([w * 32 + b + 1])), 4);
        }
      }
      if (e.state === NETLINK_CONNECTED) {
        const a = SOCKADDR_NL.encode({ family: AF.NETLINK, pid: e.dst_portid, groups: e.dst_group ? 1 << (e.dst_group - 1) : 0 });
        t.call('connect', fd, inBuf(a), a.length);
      }
      for (const o of e.nl_flags ?? []) {
        if (!FLAG_OPTS.includes(o as never)) throw new StasisError(ErrorCodes.BAD_IMAGE, `netlink socket ${e.ino}: flag option ${o} is not one stasis knows`);
        t.call('setsockopt', fd, SOL_NETLINK, o, inBuf(abi.i32s([1])), 4);
      }
      restoreSockOpts(t, fd, e.opts);
      return fd;
    },
    describe(k) {
      return `netlink protocol ${k.protocol} port ${k.portid}${k.groups?.length ? ` groups ${k.groups.map((g) => `0x${g.toString(16)}`).join(',')}` : ''}${k.state === NETLINK_CONNECTED ? ` → ${k.dst_portid}/${k.dst_group}` : ''}`;
    },
  },
});
