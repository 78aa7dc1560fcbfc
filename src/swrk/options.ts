// criu_opts → stasis's dump and restore options. Every field of criu_opts
// has a rule here (the table is typed over the schema: a field added there
// does not compile until it has one): mapped onto an option of ours,
// accepted because it changes nothing stasis produces (said why), checked
// against the images (restore.ts in this directory), or refused with an
// error naming it when it is set to something that would change the result.
import * as fs from 'node:fs';
import { StasisError, ErrorCodes } from '../errors';
import { enumValues, type Msg } from '../images/schema';
import type { DumpOptions } from '../unit/dump-ctx';
import type { RestoreOptions } from '../restore/restore';
import type { CgroupMode } from '../resources/ns/cgroup';
import { parseMountInfo } from '../proc/mountinfo';

export type CriuOpts = Msg<'criu_opts'>;
type Field = keyof CriuOpts;
type Kind = 'dump' | 'restore';

const CG = enumValues('criu_cg_mode');
/** CLONE_NEWNET: the only namespace criu accepts in empty_ns. */
const CLONE_NEWNET = 0x40000000;

/**
 * How one field is treated: 'mapped' (read by dumpOptions/restoreOptions or
 * the server), 'checked' (compared with the images before a restore),
 * 'special' (checked in screen() below),
 * `accept` (what it would change does not happen with stasis: why), or
 * `refuse` (why not, when set).
 */
type Rule = 'mapped' | 'checked' | 'special' | { accept: string } | { refuse: string };
interface Policy { dump: Rule; restore: Rule }

const both = (r: Rule): Policy => ({ dump: r, restore: r });
const restoreOnly: Rule = { accept: 'a restore option (criu ignores it on dump)' };
const dumpOnly: Rule = { accept: 'a dump option (criu ignores it on restore)' };

export const POLICY: Record<Field, Policy> = {
  images_dir_fd: both('mapped'),
  images_dir: both('mapped'),
  pid: { dump: 'mapped', restore: dumpOnly },
  leave_running: { dump: 'mapped', restore: dumpOnly },
  ext_unix_sk: { dump: 'mapped', restore: { accept: 'external unix peers in the images are always connected again' } },
  tcp_established: { dump: 'mapped', restore: { accept: 'connections in the images are always restored' } },
  evasive_devices: { dump: restoreOnly, restore: { accept: 'device files are opened by their recorded paths only: stasis may refuse where criu would fall back, never opens another file' } },
  shell_job: both('mapped'),
  file_locks: both('mapped'),
  log_level: both('mapped'),
  log_file: both('mapped'),
  ps: both({ refuse: 'page servers are not supported' }),
  notify_scripts: both('mapped'),
  root: { dump: { accept: 'the tree\'s root is read from /proc' }, restore: 'mapped' },
  parent_img: { dump: 'mapped', restore: { accept: 'a dump option (the restore follows the images\' parent link by itself)' } },
  track_mem: { dump: 'mapped', restore: dumpOnly },
  auto_dedup: both({ refuse: 'deduplication against a parent checkpoint is not supported' }),
  work_dir_fd: both('mapped'),
  link_remap: both({ refuse: 'linking unlinked files back is not supported (deleted files are carried as ghost copies)' }),
  veths: both({ refuse: 'veth pairs given by name are not supported' }),
  cpu_cap: both({ accept: 'stasis checks the CPU only for the FPU state size it needs' }),
  force_irmap: both({ refuse: 'inotify path resolution by irmap is not supported' }),
  exec_cmd: both({ refuse: 'running a command after restore is not supported' }),
  ext_mnt: both('mapped'),
  manage_cgroups: { dump: { accept: 'the tree\'s cgroups are always recorded' }, restore: 'mapped' },
  cg_root: { dump: { refuse: 'cgroup roots at dump are not supported' }, restore: 'mapped' },
  rst_sibling: { dump: restoreOnly, restore: { accept: 'the restored root is our child; we exit after the response and it is re-parented to the caller (a child subreaper: runc, conmon)' } },
  inherit_fd: { dump: restoreOnly, restore: 'mapped' },
  auto_ext_mnt: both({ refuse: 'automatic external mounts are not supported' }),
  ext_sharing: both({ refuse: 'external mount sharing is not supported' }),
  ext_masters: both({ refuse: 'external mount masters are not supported' }),
  skip_mnt: both({ refuse: 'skipping mounts is not supported' }),
  enable_fs: both({ refuse: 'enabling filesystems is not supported' }),
  unix_sk_ino: both({ refuse: 'external unix sockets by inode are not supported' }),
  manage_cgroups_mode: { dump: { accept: 'the tree\'s cgroups are always recorded' }, restore: 'mapped' },
  ghost_limit: { dump: 'mapped', restore: dumpOnly },
  irmap_scan_paths: both({ refuse: 'irmap scan paths are not supported' }),
  external: both('special'),
  empty_ns: both('special'),
  join_ns: both({ refuse: 'joining existing namespaces is not supported' }),
  cgroup_props: both({ refuse: 'cgroup property lists are not supported' }),
  cgroup_props_file: both({ refuse: 'cgroup property files are not supported' }),
  cgroup_dump_controller: both({ refuse: 'choosing cgroup controllers is not supported' }),
  freeze_cgroup: { dump: { accept: 'the tree is frozen by ptrace, every process of it' }, restore: dumpOnly },
  timeout: both({ accept: 'stasis sets no time limit on a dump or restore' }),
  tcp_skip_in_flight: both({ refuse: 'skipping connections not yet accepted is not supported' }),
  weak_sysctls: both({ refuse: 'weak sysctls are not supported' }),
  lazy_pages: both({ refuse: 'lazy pages are not supported' }),
  status_fd: both({ refuse: 'a status fd (lazy pages) is not supported' }),
  orphan_pts_master: both({ accept: 'a terminal whose master is outside the tree is refused at dump (shell jobs excepted), so no restore has one to send' }),
  config_file: both('special'),
  tcp_close: both('mapped'),
  lsm_profile: both({ refuse: 'LSM profiles are not supported' }),
  tls_cacert: both({ refuse: 'TLS (page server) is not supported' }),
  tls_cacrl: both({ refuse: 'TLS (page server) is not supported' }),
  tls_cert: both({ refuse: 'TLS (page server) is not supported' }),
  tls_key: both({ refuse: 'TLS (page server) is not supported' }),
  tls: both({ refuse: 'TLS (page server) is not supported' }),
  tls_no_cn_verify: both({ refuse: 'TLS (page server) is not supported' }),
  cgroup_yard: both({ accept: 'stasis uses the cgroup hierarchies mounted here' }),
  pre_dump_mode: both({ accept: 'stasis reads pages with process_vm_readv in either mode: the images are the same' }),
  pidfd_store_sk: both({ refuse: 'a pidfd store (for pre-dumps) is not supported' }),
  lsm_mount_context: both({ refuse: 'LSM mount contexts are not supported' }),
  network_lock: both('mapped'),
  mntns_compat_mode: both({ accept: 'stasis has one way to rebuild mounts' }),
  skip_file_rwx_check: both({ refuse: 'skipping file permission checks is not supported' }),
  unprivileged: both({ refuse: 'unprivileged mode is not supported' }),
  leave_stopped: both({ refuse: 'leaving the tree stopped is not supported' }),
  display_stats: both({ accept: 'statistics go to the log' }),
  log_to_stderr: both({ refuse: 'logging to stderr is not supported (the log goes into the work directory)' }),
};

/** Fields whose absence is not their value's default: set means present and not the default. */
const DEFAULTS: Partial<Record<Field, unknown>> = {
  images_dir_fd: -1, log_level: 2, cpu_cap: 0xffffffff, ghost_limit: 0x100000, pre_dump_mode: 1, network_lock: 1,
};

/** Whether a field is given a value that means something (false, 0, "", [] and defaults do not). */
export function isSet(o: CriuOpts, f: Field): boolean {
  const v = o[f] as unknown;
  if (v === undefined || v === false || v === '' || v === DEFAULTS[f]) return false;
  if (Array.isArray(v)) return v.length > 0;
  if (typeof v === 'number' && DEFAULTS[f] === undefined && v === 0) return false;
  return true;
}

export function optionError(field: string, what: string): StasisError {
  return new StasisError(ErrorCodes.UNSUPPORTED, `criu option ${field}: ${what}`);
}

/** Refuse what cannot be honoured; the notes say what was accepted without effect (for the log). */
export function screen(o: CriuOpts, kind: Kind): string[] {
  const notes: string[] = [];
  const other = (o.external ?? []).filter((e) => !e.startsWith('mnt[') && !(kind === 'dump' && /^net\[\d+\]:./.test(e)));
  if (other.length) throw optionError('external', `${other.join(', ')}: external resources other than mounts and (at dump) network namespaces are not supported (stasis carries what the tree has)`);
  if (isSet(o, 'empty_ns')) {
    if ((o.empty_ns! & ~CLONE_NEWNET) !== 0) throw optionError('empty_ns', `0x${o.empty_ns!.toString(16)}: only the network namespace (0x40000000) may be asked empty`);
    notes.push('criu option empty_ns (network) accepted: the tree\'s network namespace is carried as it was (loopback, addresses, routes)');
  }
  // criu reads a missing configuration file as none (runc always names /etc/criu/runc.conf).
  if (o.config_file && fs.existsSync(o.config_file)) throw optionError('config_file', `${o.config_file}: criu configuration files are not read by stasis (remove it or leave it out)`);
  if (isSet(o, 'log_level') && (o.log_level! < 0 || o.log_level! > 4)) throw optionError('log_level', `${o.log_level}: 0 to 4`);
  if (o.log_file?.includes('/')) throw optionError('log_file', `${o.log_file}: a name in the work directory, no subdirectories (as criu)`);
  for (const f of Object.keys(POLICY) as Field[]) {
    if (!isSet(o, f)) continue;
    const rule = POLICY[f][kind];
    if (typeof rule === 'object' && 'refuse' in rule) throw optionError(f, describeValue(o, f) + rule.refuse);
    if (typeof rule === 'object' && 'accept' in rule) notes.push(`criu option ${f} accepted: ${rule.accept}`);
  }
  return notes;
}

function describeValue(o: CriuOpts, f: Field): string {
  const v = o[f] as unknown;
  if (typeof v === 'string') return `${v}: `;
  if (typeof v === 'number') return `${v}: `;
  return '';
}

/** criu's manage_cgroups_mode (or the older boolean) as stasis's --manage-cgroups. */
export function cgroupMode(o: CriuOpts): CgroupMode | undefined {
  if (o.manage_cgroups_mode !== undefined) {
    const m = ({ [CG.IGNORE]: 'ignore', [CG.CG_NONE]: 'none', [CG.PROPS]: 'props', [CG.SOFT]: 'soft', [CG.FULL]: 'full', [CG.STRICT]: 'strict', [CG.DEFAULT]: 'soft' } as Record<number, CgroupMode>)[o.manage_cgroups_mode];
    if (!m) throw optionError('manage_cgroups_mode', `unknown mode ${o.manage_cgroups_mode}`);
    return m;
  }
  if (o.manage_cgroups !== undefined) return o.manage_cgroups ? 'soft' : 'ignore';
  return undefined;
}

const LOCK = enumValues('criu_network_lock_method');

/** criu's network_lock as stasis's --network-lock (unset: stasis's default, nftables else iptables). */
export function networkLock(o: CriuOpts): DumpOptions['networkLock'] {
  if (o.network_lock === undefined) return undefined;
  const m = ({ [LOCK.IPTABLES]: 'iptables', [LOCK.NFTABLES]: 'nftables', [LOCK.SKIP]: 'skip' } as Record<number, DumpOptions['networkLock']>)[o.network_lock];
  if (!m) throw optionError('network_lock', `unknown method ${o.network_lock}`);
  return m;
}

export interface Dirs { imagesDir: string; workDir: string }

/**
 * ext_mnt and external mnt[...] as stasis's --external mnt[...] forms (the
 * same text at dump, mnt[MOUNTPOINT]:KEY, and at restore, mnt[KEY]:PATH). At
 * dump criu skips a key naming no mount of the tree (runc names every device
 * node and masked path of its spec, some of them not mounts): so do we, said
 * in the log.
 */
export function externalMounts(o: CriuOpts, mountpoints: Set<string> | undefined, notes: string[]): string[] {
  const out = new Map<string, string>();
  for (const { key, val } of o.ext_mnt ?? []) out.set(key, `mnt[${key}]:${val}`);
  for (const e of o.external ?? []) {
    const m = /^mnt\[([^\]]+)\]:/.exec(e);
    if (m) out.set(m[1], e);
  }
  if (!mountpoints) return [...out.values()];
  for (const k of [...out.keys()]) {
    if (!mountpoints.has(k)) { out.delete(k); notes.push(`ext_mnt ${k}: no mount there in the tree (unused, as criu)`); }
  }
  return [...out.values()];
}

/** The mountpoints of `pid`'s mount namespace (undefined if it cannot be read: the dump says why). */
export function mountpointsOf(pid: number): Set<string> | undefined {
  try {
    return new Set(parseMountInfo(fs.readFileSync(`/proc/${pid}/mountinfo`, 'utf8')).map((m) => m.mountpoint));
  } catch {
    return undefined;
  }
}

export function dumpOptions(o: CriuOpts, dirs: Dirs, notes: string[] = []): DumpOptions & { pid: number } {
  if (o.pid === undefined || o.pid <= 0) throw optionError('pid', o.pid === undefined ? 'missing: dumping the caller itself is not supported' : `${o.pid}: not a process id`);
  // Mounts, then the network namespace (criu's net[INODE]:KEY: podman's, kept by it; see net-external.ts).
  const external = [...externalMounts(o, mountpointsOf(o.pid), notes), ...(o.external ?? []).filter((e) => e.startsWith('net['))];
  return {
    ...(external.length ? { external } : {}), networkLock: networkLock(o),
    pid: o.pid, dir: dirs.imagesDir, leaveRunning: o.leave_running === true, tcpEstablished: o.tcp_established === true, tcpClose: o.tcp_close === true,
    fileLocks: o.file_locks === true, shellJob: o.shell_job === true, extUnixSk: o.ext_unix_sk === true,
    ...(o.ghost_limit !== undefined ? { ghostLimit: o.ghost_limit } : {}),
    // Incremental: the parent as criu has it, relative to the images directory.
    ...(o.parent_img ? { prevImagesDir: o.parent_img } : {}), ...(o.track_mem ? { trackMem: true } : {}),
  };
}

export function restoreOptions(o: CriuOpts, dirs: Dirs): RestoreOptions {
  const external = externalMounts(o, undefined, []);
  return {
    ...(external.length ? { external } : {}), networkLock: networkLock(o),
    ...(o.cg_root?.length ? { cgroupRoots: o.cg_root.map((r) => ({ ...(r.ctrl ? { ctrl: r.ctrl } : {}), path: r.path })) } : {}),
    dir: dirs.imagesDir, detach: true, shellJob: o.shell_job === true, fileLocks: o.file_locks === true, tcpClose: o.tcp_close === true,
    ...(o.root ? { root: o.root } : {}), manageCgroups: cgroupMode(o),
  };
}
