// IP-level options of inet sockets (ip_opts_entry, as criu): IP_FREEBIND
// (bound to an address not, or not yet, on this host: set before the bind),
// IP_PKTINFO, IP_TOS and a TTL of the program's own (one equal to this
// network namespace's default is taken as not set). IPv6 sockets keep
// IPV6_FREEBIND and IPV6_RECVPKTINFO there. Raw sockets add theirs
// (ip_opts_raw_entry): the header included by the program (IP_HDRINCL),
// IP_NODEFRAG and the ICMP type filter of an ICMP/ICMPv6 raw socket.
import * as fs from 'node:fs';
import { abi } from '../sys';
import { inBuf, type RemoteTask } from '../compel/remote';
import { StasisError, ErrorCodes } from '../errors';
import type { Msg } from '../images/schema';
import { getInt, getOpt } from './sockopts';

const { SOL, IP, IPV6, IP_RAW, SOCK, AF, IPPROTO } = abi;

function defaultTtl(): number {
  try { return Number(fs.readFileSync('/proc/sys/net/ipv4/ip_default_ttl', 'utf8').trim()); } catch { return 64; }
}

export interface SockKind { family: number; type: number; proto: number }

/** Where the ICMP type filter of a raw socket lives (none for other protocols). */
function icmpFilter(k: SockKind): { level: number; opt: number; words: number } | undefined {
  if (k.type !== SOCK.RAW) return undefined;
  if (k.family === AF.INET && k.proto === IPPROTO.ICMP) return { level: abi.SOL_RAW, opt: abi.ICMP_FILTER, words: abi.ICMP_FILTER_WORDS };
  if (k.family === AF.INET6 && k.proto === abi.IPPROTO_ICMPV6) return { level: abi.SOL_ICMPV6, opt: abi.ICMPV6_FILTER, words: abi.ICMPV6_FILTER_WORDS };
  return undefined;
}

/** IPV6_CHECKSUM as a new raw socket of this protocol has it (the kernel's own for ICMPv6 and mobility headers). */
function defaultV6Checksum(proto: number): number {
  return proto === abi.IPPROTO_ICMPV6 ? 2 : proto === IPPROTO_MH ? 4 : -1;
}
const IPPROTO_MH = 135;

function dumpRawOpts(s: number, k: SockKind, what: string): Msg<'ip_opts_raw_entry'> {
  const v6 = k.family === AF.INET6;
  const filter: number[] = [];
  const o: Msg<'ip_opts_raw_entry'> = { icmpv_filter: filter };
  if (getInt(s, v6 ? SOL.IPV6 : SOL.IP, v6 ? IPV6.HDRINCL : IP_RAW.HDRINCL)) o.hdrincl = true;
  if (!v6 && getInt(s, SOL.IP, IP_RAW.NODEFRAG)) o.nodefrag = true;
  if (v6) {
    // The image has no room for a checksum offset of the program's own.
    const sum = getInt(s, SOL.IPV6, IPV6.CHECKSUM);
    if (sum !== defaultV6Checksum(k.proto)) throw new StasisError(ErrorCodes.UNSUPPORTED, `${what}: raw IPv6 socket with IPV6_CHECKSUM at offset ${sum}; not supported`);
  }
  const f = icmpFilter(k);
  if (f) {
    const b = getOpt(s, f.level, f.opt, f.words * 4)!;
    for (let i = 0; i + 4 <= b.length; i += 4) filter.push(b.readUInt32LE(i));
  }
  return o;
}

/** The options of socket `s` (our copy of it); undefined when none is set. */
export function dumpIpOpts(s: number, k: SockKind, what: string): Msg<'ip_opts_entry'> | undefined {
  const v6 = k.family === AF.INET6;
  const freebind = getInt(s, v6 ? SOL.IPV6 : SOL.IP, v6 ? IPV6.FREEBIND : IP.FREEBIND) !== 0;
  const pktinfo = getInt(s, v6 ? SOL.IPV6 : SOL.IP, v6 ? IPV6.RECVPKTINFO : IP.PKTINFO) !== 0;
  // IPv4 options of an IPv6 socket: not asked of a raw one (it has no SOL_IP level).
  const v4opts = !v6 || k.type !== SOCK.RAW;
  const tos = v4opts ? getInt(s, SOL.IP, IP.TOS) : 0;
  const ttl = v4opts ? getInt(s, SOL.IP, IP.TTL) : defaultTtl();
  const o: Msg<'ip_opts_entry'> = {
    ...(freebind ? { freebind } : {}), ...(pktinfo ? { pktinfo } : {}), ...(tos ? { tos } : {}),
    ...(ttl !== defaultTtl() ? { ttl } : {}),
    ...(k.type === SOCK.RAW ? { raw: dumpRawOpts(s, k, what) } : {}),
  };
  return Object.keys(o).length ? o : undefined;
}

/** IP_FREEBIND's level and name for the family. */
export function freebindOpt(family: number): [number, number] {
  return family === AF.INET6 ? [SOL.IPV6, IPV6.FREEBIND] : [SOL.IP, IP.FREEBIND];
}

/** Before the bind (IP_FREEBIND lets it take an address not on this host). */
export function restoreIpOpts(t: RemoteTask, fd: number, k: SockKind, o: Msg<'ip_opts_entry'> | undefined): void {
  if (!o) return;
  const v6 = k.family === AF.INET6;
  const set = (level: number, opt: number, v: number) => t.call('setsockopt', fd, level, opt, inBuf(abi.i32s([v])), 4);
  if (o.freebind) set(...freebindOpt(k.family), 1);
  if (o.pktinfo) set(v6 ? SOL.IPV6 : SOL.IP, v6 ? IPV6.RECVPKTINFO : IP.PKTINFO, 1);
  if (o.tos) set(SOL.IP, IP.TOS, o.tos);
  if (o.ttl) set(SOL.IP, IP.TTL, o.ttl);
  const r = o.raw;
  if (!r) return;
  if (r.hdrincl) set(v6 ? SOL.IPV6 : SOL.IP, v6 ? IPV6.HDRINCL : IP_RAW.HDRINCL, 1);
  if (r.nodefrag) set(SOL.IP, IP_RAW.NODEFRAG, 1);
  const f = icmpFilter(k);
  if (f && r.icmpv_filter?.length) {
    if (r.icmpv_filter.length !== f.words) throw new StasisError(ErrorCodes.BAD_IMAGE, `ICMP filter of ${r.icmpv_filter.length} word(s); the socket takes ${f.words}`);
    const b = Buffer.alloc(f.words * 4);
    r.icmpv_filter.forEach((w, i) => b.writeUInt32LE(w >>> 0, i * 4));
    t.call('setsockopt', fd, f.level, f.opt, inBuf(b), b.length);
  }
}
