// Packet sockets (AF_PACKET: SOCK_RAW, SOCK_DGRAM and the old SOCK_PACKET):
// protocol, the interface bound, TPACKET version, reserve, timestamp source,
// copy threshold, aux data, original device, vnet header, loss, memberships
// (promiscuous, multicast...), fanout group and the rings' geometry, as
// packet_diag tells them (packet_sock_entry, as criu). What such a socket
// holds to read came off the wire: refused, as no sender of ours could queue
// it again. A ring mapped into the task is refused by the memory dump.
import { sysTry, abi, pollOne } from '../sys';
import { inBuf, ioBuf, type RemoteTask } from '../compel/remote';
import { StasisError, ErrorCodes } from '../errors';
import { FD_TYPES, NO_FOWN } from '../images/criu';
import type { Msg } from '../images/schema';
import { defineFileUnit } from '../unit/unit';
import { packetSockets, type PacketDiag } from '../proc/sockdiag';
import { inNamespaceOf } from '../proc/ns';
import { grabSocket, getInt, dumpSockOpts, restoreSockOpts, socketDomain } from './sockopts';

const { AF, SOCK, SOL, SO, SOL_PACKET, PACKET, PDI, SOCK_PACKET } = abi;

/** Fanout modes whose steering program (PACKET_FANOUT_DATA) cannot be read back. */
const FANOUT_CBPF = 6, FANOUT_EBPF = 7;

function htons(x: number): number { return ((x & 0xff) << 8) | ((x >> 8) & 0xff); }

type Ring = Msg<'packet_ring'>;
function ringOf(r: PacketDiag['rx']): Ring | undefined {
  return r ? { block_size: r.block_size, block_nr: r.block_nr, frame_size: r.frame_size, frame_nr: r.frame_nr, retire_tmo: r.retire_tmo, sizeof_priv: r.sizeof_priv, features: r.features } : undefined;
}

/** Options the image has no room for: refused when set. */
function refuseUnkept(s: number, what: string): void {
  for (const [name, opt] of [['PACKET_QDISC_BYPASS', PACKET.QDISC_BYPASS], ['PACKET_IGNORE_OUTGOING', PACKET.IGNORE_OUTGOING]] as const) {
    if (getInt(s, SOL_PACKET, opt)) throw new StasisError(ErrorCodes.UNSUPPORTED, `${what} has ${name} set; not supported`);
  }
}

function setInt(t: RemoteTask, fd: number, opt: number, v: number): void {
  t.call('setsockopt', fd, SOL_PACKET, opt, inBuf(abi.i32s([v])), 4);
}

/** bind() again: to the interface by index, or for SOCK_PACKET by its name (as this namespace calls it). */
function bindAgain(t: RemoteTask, fd: number, e: Msg<'packet_sock_entry'>): void {
  if (e.type !== SOCK_PACKET) {
    const a = abi.SOCKADDR_LL.encode({ family: AF.PACKET, ifindex: e.ifindex });
    t.call('bind', fd, inBuf(a), a.length);
    return;
  }
  if (!e.ifindex) return;
  const req = ioBuf(abi.IFREQ.encode({ ifindex: e.ifindex }));
  const r = t.callRaw('ioctl', fd, abi.SIOCGIFNAME, req);
  if (r < 0n) throw new StasisError(ErrorCodes.RESTORE_FAILED, `packet socket ${e.id}: interface ${e.ifindex} is not here (errno ${-r})`);
  const name = abi.IFREQ.decode(req.data).name;
  const a = abi.SOCKADDR_PKT.encode({ family: AF.PACKET, device: name.subarray(0, abi.SOCKADDR_PKT.size - abi.SOCKADDR_PKT.offsets.device) });
  t.call('bind', fd, inBuf(a), a.length);
}

function restoreRing(t: RemoteTask, fd: number, opt: number, r: Ring | undefined): void {
  if (!r) return;
  const req = abi.TPACKET_REQ3.encode({
    block_size: r.block_size, block_nr: r.block_nr, frame_size: r.frame_size, frame_nr: r.frame_nr,
    retire_blk_tov: r.retire_tmo, sizeof_priv: r.sizeof_priv, feature_req_word: r.features,
  });
  t.call('setsockopt', fd, SOL_PACKET, opt, inBuf(req), req.length);
}

interface DumpState { diag?: Map<number, PacketDiag> }

export const packetSocketUnit = defineFileUnit({
  name: 'packet sockets',
  dumpState: (): DumpState => ({}),
  file: {
    type: FD_TYPES.PACKETSK,
    field: 'psk',
    match: (d) => d.st.isSocket() && socketDomain(d.pid, d.fd) === AF.PACKET,
    dump(_ctx, d, id, st) {
      const what = `fd ${d.fd} of pid ${d.pid}: packet socket ${d.st.ino}`;
      st.diag ??= inNamespaceOf(d.pid, 'net', () => packetSockets());
      const p = st.diag.get(d.st.ino);
      if (!p?.info) throw new StasisError(ErrorCodes.UNSUPPORTED, `${what} not found by packet_diag`);
      const s = grabSocket(d.pid, d.fd);
      try {
        if (pollOne(s, abi.POLL.IN, 0) & abi.POLL.IN) throw new StasisError(ErrorCodes.UNSUPPORTED, `${what} has packets queued to read${p.rx ? ' (in its receive ring)' : ''}; not supported`);
        const type = getInt(s, SOL.SOCKET, SO.TYPE);
        // SOCK_PACKET has none of SOL_PACKET's options.
        if (type !== SOCK_PACKET) refuseUnkept(s, what);
        if (p.fanout !== undefined && [FANOUT_CBPF, FANOUT_EBPF].includes((p.fanout >> 16) & 0xff)) {
          throw new StasisError(ErrorCodes.UNSUPPORTED, `${what} is in a fanout group steered by a BPF program; not supported`);
        }
        const mclist: Msg<'packet_mclist'>[] = [];
        // A membership added n times is kept n times (each drop takes one).
        for (const m of p.mclist) for (let i = 0; i < Math.max(1, m.count); i++) mclist.push({ index: m.index, type: m.type, addr: Buffer.from(m.addr.subarray(0, m.alen)) });
        const i = p.info;
        return {
          id, type, protocol: htons(p.proto), flags: d.flags, ifindex: i.index,
          fown: NO_FOWN, opts: dumpSockOpts(s, false, what),
          version: i.version, reserve: i.reserve, aux_data: !!(i.flags & PDI.AUXDATA), orig_dev: !!(i.flags & PDI.ORIGDEV),
          vnet_hdr: !!(i.flags & PDI.VNETHDR), loss: !!(i.flags & PDI.LOSS), timestamp: i.tstamp, copy_thresh: i.copy_thresh,
          // getsockopt gives the group with its mode and flags (rollover, defrag), as setsockopt takes it; packet_diag has no flags.
          mclist, fanout: p.fanout === undefined ? undefined : getInt(s, SOL_PACKET, PACKET.FANOUT) >>> 0, rx_ring: ringOf(p.rx), tx_ring: ringOf(p.tx),
        };
      } finally {
        sysTry('close', s);
      }
    },
    open(_ctx, tr, e) {
      const t = tr.task;
      const fd = t.callNum('socket', AF.PACKET, e.type | (e.flags & abi.O.NONBLOCK ? SOCK.NONBLOCK : 0), e.protocol);
      bindAgain(t, fd, e);
      if (e.type !== SOCK_PACKET) {
        // Before the rings: each is refused once a ring is there.
        if (e.version) setInt(t, fd, PACKET.VERSION, e.version);
        if (e.reserve) setInt(t, fd, PACKET.RESERVE, e.reserve);
        if (e.timestamp) setInt(t, fd, PACKET.TIMESTAMP, e.timestamp);
        if (e.copy_thresh) setInt(t, fd, PACKET.COPY_THRESH, e.copy_thresh);
        if (e.aux_data) setInt(t, fd, PACKET.AUXDATA, 1);
        if (e.orig_dev) setInt(t, fd, PACKET.ORIGDEV, 1);
        if (e.vnet_hdr) setInt(t, fd, PACKET.VNET_HDR, 1);
        if (e.loss) setInt(t, fd, PACKET.LOSS, 1);
        for (const m of e.mclist ?? []) {
          const mreq = abi.PACKET_MREQ.encode({ ifindex: m.index, type: m.type, alen: m.addr.length, address: m.addr });
          t.call('setsockopt', fd, SOL_PACKET, PACKET.ADD_MEMBERSHIP, inBuf(mreq), mreq.length);
        }
        restoreRing(t, fd, PACKET.RX_RING, e.rx_ring);
        restoreRing(t, fd, PACKET.TX_RING, e.tx_ring);
        // The u32 as the int setsockopt takes (same bits: the flags are in the top byte).
        if (e.fanout !== undefined) setInt(t, fd, PACKET.FANOUT, e.fanout | 0);
      }
      restoreSockOpts(t, fd, e.opts);
      return fd;
    },
    describe(k) {
      return `packet ${k.type === SOCK_PACKET ? 'SOCK_PACKET' : k.type === SOCK.RAW ? 'raw' : 'dgram'} protocol 0x${htons(k.protocol).toString(16)} ifindex ${k.ifindex}`;
    },
  },
});
