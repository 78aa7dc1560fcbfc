// IP-level options of inet sockets (ip_opts_entry, as criu): IP_FREEBIND
// (bound to an address not, or not yet, on this host: set before the bind),
// IP_PKTINFO, IP_TOS and a TTL of the program's own (one equal to this
// network namespace's default is taken as not set).
import * as fs from 'node:fs';
import { abi } from '../sys';
import { inBuf, type RemoteTask } from '../compel/remote';
import type { Msg } from '../images/schema';
import { getInt } from './sockopts';

const { SOL, IP } = abi;

function defaultTtl(): number {
  try { return Number(fs.readFileSync('/proc/sys/net/ipv4/ip_default_ttl', 'utf8').trim()); } catch { return 64; }
}

/** The options of socket `s` (our copy of it); undefined when none is set. */
export function dumpIpOpts(s: number): Msg<'ip_opts_entry'> | undefined {
  const freebind = getInt(s, SOL.IP, IP.FREEBIND) !== 0;
  const pktinfo = getInt(s, SOL.IP, IP.PKTINFO) !== 0;
  const tos = getInt(s, SOL.IP, IP.TOS);
  const ttl = getInt(s, SOL.IP, IP.TTL);
  const o: Msg<'ip_opts_entry'> = {
    ...(freebind ? { freebind } : {}), ...(pktinfo ? { pktinfo } : {}), ...(tos ? { tos } : {}),
    ...(ttl !== defaultTtl() ? { ttl } : {}),
  };
  return Object.keys(o).length ? o : undefined;
}

/** Before the bind (IP_FREEBIND lets it take an address not on this host). */
export function restoreIpOpts(t: RemoteTask, fd: number, o: Msg<'ip_opts_entry'> | undefined): void {
  if (!o) return;
  const set = (opt: number, v: number) => t.call('setsockopt', fd, SOL.IP, opt, inBuf(abi.i32s([v])), 4);
  if (o.freebind) set(IP.FREEBIND, 1);
  if (o.pktinfo) set(IP.PKTINFO, 1);
  if (o.tos) set(IP.TOS, o.tos);
  if (o.ttl) set(IP.TTL, o.ttl);
}
