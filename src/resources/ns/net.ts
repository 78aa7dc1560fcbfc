// Network namespace of its own, in criu's images: its links (netdev-ID.img:
// loopback and veth, flags, mtu, address, per-device ipv4/ipv6 sysctls), its
// namespace-wide sysctls (netns-ID.img), addresses, routes and rules as
// iproute2 saves them (ifaddr-, route-, route6-, rule-ID.img, raw), and its
// firewall as `nft list ruleset` prints it (nftables-ID.img). Restored in the
// root's new namespace before any socket of the tree exists. A veth whose
// other end is in our namespace gets that end again, with its name and
// bridge (criu needs --external veth[...] for it).
import * as fs from 'node:fs';
import { childProcess } from '../../node-lazy';
import { inNamespace } from '../../proc/ns';
import { parts, type Msg } from '../../images/image';
import { StasisError, ErrorCodes } from '../../errors';
import { defineUnit } from '../../unit/unit';
import type { DumpCtx } from '../../unit/dump-ctx';
import type { Loading } from '../../unit/checkpoint';
import { namespacesUnit } from './namespaces';
import { externalNetKey, externalNetPath, checkNetNs } from './net-external';
import { abi } from '../../sys';
import { cstr } from '../../compel/remote';
import { nsId } from '../../proc/ns';
import { SCHEMA } from '../../images/schema';

const ND = SCHEMA.enums.nd_type;
const SYSCTL = SCHEMA.enums.SysctlType;
type Dev = Msg<'net_device_entry'>;
type Sysctl = Msg<'sysctl_entry'>;

/** Per-device sysctls, positionally (criu's lists: the images' order). */
export const DEVCONFS4 = ['accept_local', 'accept_redirects', 'accept_source_route', 'arp_accept', 'arp_announce', 'arp_filter', 'arp_ignore',
  'arp_notify', 'bootp_relay', 'disable_policy', 'disable_xfrm', 'force_igmp_version', 'forwarding', 'igmpv2_unsolicited_report_interval',
  'igmpv3_unsolicited_report_interval', 'log_martians', 'medium_id', 'promote_secondaries', 'proxy_arp', 'proxy_arp_pvlan', 'route_localnet',
  'rp_filter', 'secure_redirects', 'send_redirects', 'shared_media', 'src_valid_mark', 'tag', 'ignore_routes_with_linkdown',
  'drop_gratuitous_arp', 'drop_unicast_in_l2_multicast'];
export const DEVCONFS6 = ['accept_dad', 'accept_ra', 'accept_ra_defrtr', 'accept_ra_from_local', 'accept_ra_min_hop_limit', 'accept_ra_mtu',
  'accept_ra_pinfo', 'accept_ra_rt_info_max_plen', 'accept_ra_rtr_pref', 'accept_redirects', 'accept_source_route', 'autoconf', 'dad_transmits',
  'disable_ipv6', 'drop_unicast_in_l2_multicast', 'drop_unsolicited_na', 'force_mld_version', 'force_tllao', 'forwarding', 'hop_limit',
  'ignore_routes_with_linkdown', 'keep_addr_on_down', 'max_addresses', 'max_desync_factor', 'mldv1_unsolicited_report_interval',
  'mldv2_unsolicited_report_interval', 'mtu', 'ndisc_notify', 'optimistic_dad', 'proxy_ndp', 'regen_max_retry', 'router_probe_interval',
  'router_solicitation_delay', 'router_solicitation_interval', 'router_solicitations', 'stable_secret', 'suppress_frag_ndisc',
  'temp_prefered_lft', 'temp_valid_lft', 'use_oif_addrs_only', 'use_optimistic', 'use_tempaddr'];
const STR_CONFS = new Set(['stable_secret', 'ping_group_range']);
const IFF = { UP: 0x1, LOOPBACK: 0x8 } as const;

/** A tool run in the network namespace of `pid` (util-linux nsenter: our own threads stay where they are). */
function inNet(pid: number, cmd: string[], opts: { input?: number; output?: number } = {}): string {
  const r = childProcess().spawnSync('nsenter', [`--net=/proc/${pid}/ns/net`, ...cmd], {
    stdio: [opts.input ?? 'ignore', opts.output ?? 'pipe', 'pipe'], encoding: 'utf8',
  });
  if (r.error) throw new StasisError(ErrorCodes.UNSUPPORTED, `cannot run ${cmd[0]} (${r.error.message}): the network namespace needs iproute2 and nftables`);
  if (r.status !== 0) throw new StasisError(ErrorCodes.UNSUPPORTED, `${cmd.join(' ')} in the tree's network namespace failed: ${(r.stderr || '').trim().split('\n')[0]}`);
  return r.stdout ?? '';
}

/** Namespace-wide ipv4 sysctls (netns_entry.ipv4_sysctl), positionally. */
const IPV4_SYSCTLS = ['ping_group_range'];

function readConfs(dir: string, names: string[]): Sysctl[] {
  return names.map((n) => {
    let v: string;
    try { v = fs.readFileSync(`${dir}/${n}`, 'utf8').trim(); } catch { return { type: SYSCTL.CTL_32 }; } // absent here: skipped on restore
    return STR_CONFS.has(n) ? { type: SYSCTL.CTL_STR, sarg: v } : { type: SYSCTL.CTL_32, iarg: Number(v) };
  });
}

function writeConfs(dir: string, names: string[], values: Sysctl[] | undefined, warn: (w: string) => void): void {
  (values ?? []).forEach((v, i) => {
    const val = v.type === SYSCTL.CTL_STR ? v.sarg : v.iarg;
    if (val === undefined || !names[i]) return;
    try {
      const f = `${dir}/${names[i]}`;
      if (fs.readFileSync(f, 'utf8').trim() !== String(val)) fs.writeFileSync(f, String(val));
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT') warn(`${dir}/${names[i]}: could not be set to ${val} (${code})`);
    }
  });
}

/** A link as `ip -json -d link show` gives it: a veth's other end by name (`link`) in the same namespace, by index (`link_index`) and `link_netnsid` in another. */
interface IpLink { ifindex: number; ifname: string; flags: string[]; mtu: number; address?: string; link_type: string; link?: string; link_index?: number; link_netnsid?: number; linkinfo?: { info_kind?: string }; master?: string }

function flagBits(flags: string[]): number {
  const bits: Record<string, number> = { UP: 0x1, BROADCAST: 0x2, DEBUG: 0x4, LOOPBACK: 0x8, POINTOPOINT: 0x10, NOARP: 0x80, PROMISC: 0x100, ALLMULTI: 0x200, MULTICAST: 0x1000 };
  return flags.reduce((a, f) => a | (bits[f] ?? 0), 0);
}

/**
 * Links of the tree's namespace (`links`, as ip lists them there; their
 * sysctls read from our main thread entered into it); `ours`: our links, for
 * the other end of each veth that lives in our namespace.
 */
function dumpLinks(pid: number, links: IpLink[], ours: IpLink[]): Dev[] {
  return links.map((l): Dev => {
    const kind = l.link_type === 'loopback' ? ND.LOOPBACK : l.linkinfo?.info_kind === 'veth' ? ND.VETH : undefined;
    if (kind === undefined) throw new StasisError(ErrorCodes.UNSUPPORTED, `pid ${pid}'s network namespace has link ${l.ifname} of kind ${l.linkinfo?.info_kind ?? l.link_type}; only loopback and veth are supported`);
    const dev: Dev = {
      type: kind, ifindex: l.ifindex, mtu: l.mtu, flags: flagBits(l.flags), name: l.ifname,
      address: l.address && kind !== ND.LOOPBACK ? Buffer.from(l.address.split(':').map((x) => parseInt(x, 16))) : undefined,
      conf4: readConfs(`/proc/sys/net/ipv4/conf/${l.ifname}`, DEVCONFS4), conf6: readConfs(`/proc/sys/net/ipv6/conf/${l.ifname}`, DEVCONFS6),
      peer_ifindex: l.link_index ?? links.find((o) => o.ifname === l.link)?.ifindex,
    };
    if (kind === ND.VETH && l.link_netnsid !== undefined) {
      // The other end lies in another namespace: ours, or refused.
      const peer = ours.find((o) => o.linkinfo?.info_kind === 'veth' && o.ifindex === l.link_index && o.link_index === l.ifindex);
      if (!peer) throw new StasisError(ErrorCodes.UNSUPPORTED, `pid ${pid}'s veth ${l.ifname} has its other end in a network namespace other than ours; not supported`);
      dev.ext_peer_name = peer.ifname;
      dev.ext_peer_master = peer.master;
    }
    return dev;
  });
}

function dumpNet(ctx: DumpCtx, pid: number, nsid: number): void {
  const links = JSON.parse(inNet(pid, ['ip', '-json', '-d', 'link', 'show'])) as IpLink[];
  const ours = JSON.parse(childProcess().spawnSync('ip', ['-json', '-d', 'link', 'show'], { encoding: 'utf8' }).stdout || '[]') as IpLink[];
  const devs = inNamespace(pid, 'net', () => dumpLinks(pid, links, ours));
  const netns: Msg<'netns_entry'> = inNamespace(pid, 'net', () => ({
    def_conf4: readConfs('/proc/sys/net/ipv4/conf/default', DEVCONFS4), all_conf4: readConfs('/proc/sys/net/ipv4/conf/all', DEVCONFS4),
    def_conf6: readConfs('/proc/sys/net/ipv6/conf/default', DEVCONFS6), all_conf6: readConfs('/proc/sys/net/ipv6/conf/all', DEVCONFS6),
    unix_conf: readConfs('/proc/sys/net/unix', ['max_dgram_qlen']),
    // Who may open ping sockets (criu's list: this one only).
    ipv4_sysctl: readConfs('/proc/sys/net/ipv4', IPV4_SYSCTLS),
  }));
  ctx.write(`netdev-${nsid}.img`, 'NETDEV', parts('net_device_entry', devs));
  ctx.write(`netns-${nsid}.img`, 'NETNS', parts('netns_entry', [netns]));
  for (const [file, cmd] of [['ifaddr', ['ip', 'addr', 'save']], ['route', ['ip', 'route', 'save']], ['route6', ['ip', '-6', 'route', 'save']], ['rule', ['ip', 'rule', 'save']]] as const) {
    const out = ctx.out.create(`${file}-${nsid}.img`);
    try { inNet(pid, [...cmd], { output: out.handOver() }); } finally { out.close(); }
  }
  const nft = ctx.out.create(`nftables-${nsid}.img`);
  try { inNet(pid, ['nft', 'list', 'ruleset'], { output: nft.handOver() }); } finally { nft.close(); }
}

interface Carried { nsid: number; devs: Dev[]; netns: Msg<'netns_entry'> }
/** What restore does with the tree's network namespace: re-create it (carried), join one (the file standing for it), or nothing (ours). */
interface Loaded { carried?: Carried; join?: string }

function loadNet(ld: Loading): Loaded {
  const own = ld.loaded(namespacesUnit).has('net');
  const nsid = ld.processes[0].ids.net_ns_id!;
  const file = `netns-${nsid}.img`;
  const netns = own ? ld.images.one(file, 'NETNS', 'netns_entry') : undefined;
  const key = netns?.ext_key;
  const join = externalNetPath(key ?? '', key === undefined ? [] : ld.opts.inheritFd, ld.opts.joinNs);
  if (key !== undefined && join === undefined) {
    throw new StasisError(ErrorCodes.USAGE, `${ld.images.path(file)}: the tree's network namespace was dumped as external (key ${key}): restore with --inherit-fd fd[N]:${key} or --join-ns net:PATH`);
  }
  if (join !== undefined) { checkNetNs(join, 'the network namespace to join'); return { join }; }
  return netns ? { carried: loadCarried(ld, nsid, netns) } : {};
}

function loadCarried(ld: Loading, nsid: number, netns: Msg<'netns_entry'>): Carried {
  const devs = ld.images.read(`netdev-${nsid}.img`, 'NETDEV', 'net_device_entry');
  for (const d of devs) {
    if (d.type !== ND.LOOPBACK && d.type !== ND.VETH) throw new StasisError(ErrorCodes.BAD_IMAGE, `${ld.images.path(`netdev-${nsid}.img`)}: link ${d.name} of type ${d.type} is not supported`);
    if (!/^[\w.-]{1,15}$/.test(d.name) || (d.ext_peer_name !== undefined && !/^[\w.-]{1,15}$/.test(d.ext_peer_name))) throw new StasisError(ErrorCodes.BAD_IMAGE, `${ld.images.path(`netdev-${nsid}.img`)}: bad link name`);
  }
  for (const f of ['ifaddr', 'route', 'route6', 'rule', 'nftables']) if (!ld.images.exists(`${f}-${nsid}.img`)) throw new StasisError(ErrorCodes.BAD_IMAGE, `${ld.images.path(`${f}-${nsid}.img`)}: missing`);
  return { nsid, devs, netns };
}

const mac = (b: Buffer) => [...b].map((x) => x.toString(16).padStart(2, '0')).join(':');

/** Links with their ifindex (addresses and routes name it), then config, addresses, routes, rules, firewall. */
function restoreNet(l: Carried, pid: number, images: Loading['images'], warn: (w: string) => void): void {
  const byIndex = new Map(l.devs.map((d) => [d.ifindex, d]));
  const made = new Set<number>();
  for (const d of l.devs) {
    if (d.type === ND.LOOPBACK || made.has(d.ifindex)) continue;
    const peer = d.peer_ifindex !== undefined ? byIndex.get(d.peer_ifindex) : undefined;
    if (d.ext_peer_name !== undefined) {
      // Its other end in our namespace (where it was), on its bridge again.
      spawnOrFail(['ip', 'link', 'add', 'name', d.ext_peer_name, 'type', 'veth', 'peer', 'name', d.name, 'index', String(d.ifindex), 'netns', String(pid)]);
      if (d.ext_peer_master) spawnOrFail(['ip', 'link', 'set', d.ext_peer_name, 'master', d.ext_peer_master]);
      spawnOrFail(['ip', 'link', 'set', d.ext_peer_name, 'up']);
    } else if (peer && peer.type === ND.VETH) {
      inNet(pid, ['ip', 'link', 'add', 'name', d.name, 'index', String(d.ifindex), 'type', 'veth', 'peer', 'name', peer.name, 'index', String(peer.ifindex)]);
      made.add(peer.ifindex);
    } else {
      throw new StasisError(ErrorCodes.RESTORE_FAILED, `veth ${d.name}: its other end is not in the images`);
    }
    made.add(d.ifindex);
  }
  inNamespace(pid, 'net', () => {
    writeConfs('/proc/sys/net/ipv4/conf/all', DEVCONFS4, l.netns.all_conf4, warn);
    writeConfs('/proc/sys/net/ipv4/conf/default', DEVCONFS4, l.netns.def_conf4, warn);
    writeConfs('/proc/sys/net/ipv6/conf/all', DEVCONFS6, l.netns.all_conf6, warn);
    writeConfs('/proc/sys/net/ipv6/conf/default', DEVCONFS6, l.netns.def_conf6, warn);
    writeConfs('/proc/sys/net/unix', ['max_dgram_qlen'], l.netns.unix_conf, warn);
    writeConfs('/proc/sys/net/ipv4', IPV4_SYSCTLS, l.netns.ipv4_sysctl, warn);
    for (const d of l.devs) {
      writeConfs(`/proc/sys/net/ipv4/conf/${d.name}`, DEVCONFS4, d.conf4, warn);
      writeConfs(`/proc/sys/net/ipv6/conf/${d.name}`, DEVCONFS6, d.conf6, warn);
    }
  });
  for (const d of l.devs) {
    const args = ['ip', 'link', 'set', 'dev', d.name, 'mtu', String(d.mtu)];
    if (d.address?.length) args.push('address', mac(d.address));
    inNet(pid, [...args, d.flags & IFF.UP ? 'up' : 'down']);
  }
  const replay = (file: string, cmd: string[]) => {
    const fd = images.open(`${file}-${l.nsid}.img`);
    try { inNetLenient(pid, cmd, fd); } finally { fs.closeSync(fd); }
  };
  replay('ifaddr', ['ip', 'addr', 'restore']);
  replay('route', ['ip', 'route', 'restore']);
  replay('route6', ['ip', '-6', 'route', 'restore']);
  // The default rules exist already: replaced by the dumped ones.
  inNet(pid, ['ip', 'rule', 'flush']);
  inNetLenient(pid, ['ip', 'rule', 'delete', 'table', 'local']);
  replay('rule', ['ip', 'rule', 'restore']);
  const nft = images.open(`nftables-${l.nsid}.img`);
  try { inNet(pid, ['nft', '-f', '-'], { input: nft }); } finally { fs.closeSync(nft); }
}

/** iproute2's restore reports what already exists (kernel routes, lo's addresses) and goes on: only a hard failure counts. */
function inNetLenient(pid: number, cmd: string[], input?: number): void {
  const r = childProcess().spawnSync('nsenter', [`--net=/proc/${pid}/ns/net`, ...cmd], { stdio: [input ?? 'ignore', 'pipe', 'pipe'], encoding: 'utf8' });
  if (r.error) throw new StasisError(ErrorCodes.RESTORE_FAILED, `cannot run ${cmd[0]}: ${r.error.message}`);
  const bad = (r.stderr ?? '').split('\n').filter((x) => x.trim() && !/File exists|already assigned|No such file or directory|Cannot find device/.test(x));
  if (r.status !== 0 && bad.length) throw new StasisError(ErrorCodes.RESTORE_FAILED, `${cmd.join(' ')} in the tree's network namespace: ${bad[0]}`);
}

function spawnOrFail(cmd: string[]): void {
  const r = childProcess().spawnSync(cmd[0], cmd.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8' });
  if (r.status !== 0) throw new StasisError(ErrorCodes.RESTORE_FAILED, `${cmd.join(' ')}: ${(r.stderr || r.error?.message || '').trim()}`);
}

export const netUnit = defineUnit({
  name: 'net',
  dumpPhases: [{
    // Before anything else may touch the firewall (the network lock).
    name: 'net', after: ['namespaces'], before: ['parasite'],
    once(ctx) {
      const own = ctx.state(namespacesUnit).own.has('net');
      const root = ctx.processes[0];
      const key = externalNetKey(ctx.opts.external ?? [], own ? nsId(root.pid, 'net') : undefined);
      if (key !== undefined) ctx.write(`netns-${root.ids.net_ns_id}.img`, 'NETNS', parts('netns_entry', [{ ext_key: key }]));
      else if (own) dumpNet(ctx, root.pid, root.ids.net_ns_id!);
    },
  }],
  loadAfter: ['namespaces'],
  load: loadNet,
  restorePhases: [{
    // The stub enters the namespace to join; the root is born in it, not in a new one.
    name: 'net-join', stage: 'stub', after: ['namespaces'],
    once(ctx, l) {
      if (l.join === undefined) return;
      ctx.rootClone.flags &= ~abi.CLONE.NEWNET;
      const stub = ctx.stub!;
      const fd = stub.callNum('openat', abi.AT_FDCWD, cstr(l.join.startsWith('/proc/self/') ? l.join.replace('/proc/self/', `/proc/${process.pid}/`) : l.join), abi.O.RDONLY | abi.O.CLOEXEC, 0);
      try { stub.call('setns', fd, abi.CLONE.NEWNET); } finally { stub.call('close', fd); }
    },
  }, {
    name: 'net', stage: 'root',
    once(ctx, l) {
      if (!l.carried) return;
      restoreNet(l.carried, ctx.tasks.values().next().value!.task.pid, ctx.ckpt.images, (w) => ctx.warnings.push(w));
    },
  }],
});
