// How each mount of a mount namespace is re-created (pure, unit-tested):
//  - a filesystem we also have mounted (same device, a root covering its
//    root): bound from there ("host": the tree's root on the host's /, the
//    host's /proc, /sys, /dev...), unless --root gives the tree's root;
//  - a filesystem the kernel makes anew (proc, tmpfs, sysfs, devpts, mqueue,
//    cgroup...): mounted afresh, a tmpfs refilled with its contents;
//  - another mount of the tree's own filesystem: bound from that one;
//  - anything else cannot be re-created here: refused.
import type { MountInfo } from '../../proc/mountinfo';
import { abi } from '../../sys';
import type { Msg } from '../../images/schema';
import { SCHEMA } from '../../images/schema';
import { StasisError, ErrorCodes } from '../../errors';

const { MS } = abi;
export const FSTYPE = SCHEMA.enums.fstype;

/** Filesystems mounted afresh (no contents of their own, or contents we carry: tmpfs). */
const CREATABLE: Record<string, number> = {
  proc: FSTYPE.PROC, sysfs: FSTYPE.SYSFS, tmpfs: FSTYPE.TMPFS, devpts: FSTYPE.DEVPTS, mqueue: FSTYPE.MQUEUE,
  cgroup: FSTYPE.CGROUP, cgroup2: FSTYPE.CGROUP2, devtmpfs: FSTYPE.DEVTMPFS, binfmt_misc: FSTYPE.BINFMT_MISC,
  securityfs: FSTYPE.SECURITYFS, debugfs: FSTYPE.DEBUGFS, tracefs: FSTYPE.TRACEFS, pstore: FSTYPE.PSTORE, fusectl: FSTYPE.FUSECTL,
};

export function fstypeOf(name: string): number {
  return CREATABLE[name.split('.')[0]] ?? (name === 'overlay' ? FSTYPE.OVERLAYFS : name === 'autofs' ? FSTYPE.AUTOFS : FSTYPE.UNSUPPORTED);
}

const MOUNT_OPTS: Record<string, number> = {
  ro: MS.RDONLY, nosuid: MS.NOSUID, nodev: MS.NODEV, noexec: MS.NOEXEC, noatime: MS.NOATIME, nodiratime: MS.NODIRATIME,
  relatime: MS.RELATIME, nosymfollow: MS.NOSYMFOLLOW,
};
const SB_OPTS: Record<string, number> = { ro: MS.RDONLY, sync: MS.SYNCHRONOUS, dirsync: MS.DIRSYNC, mand: MS.MANDLOCK, lazytime: MS.LAZYTIME };

/** Per-mount flags and propagation (criu's mnt_entry.flags). */
export function mountFlags(m: MountInfo): number {
  let f = 0;
  for (const o of m.mountOpts) f |= MOUNT_OPTS[o] ?? 0;
  if (!(f & (MS.RELATIME | MS.NOATIME))) f |= MS.STRICTATIME;
  if (m.optional.some((o) => o.startsWith('shared:'))) f |= MS.SHARED;
  if (m.optional.some((o) => o.startsWith('master:'))) f |= MS.SLAVE;
  if (m.optional.includes('unbindable')) f |= MS.UNBINDABLE;
  return f >>> 0;
}

export function sbFlags(m: MountInfo): number {
  let f = 0;
  for (const o of m.superOpts) f |= SB_OPTS[o] ?? 0;
  return f;
}

/** Superblock options to mount with (the flag-like ones are flags). */
export function fsOptions(m: MountInfo): string {
  return m.superOpts.filter((o) => !(o in SB_OPTS) && o !== 'rw').join(',');
}

export type Plan =
  | { how: 'host'; from: string }
  | { how: 'create' }
  | { how: 'bind'; from: number; sub: string };

type Mnt = Pick<Msg<'mnt_entry'>, 'mnt_id' | 'parent_mnt_id' | 'root_dev' | 'root' | 'mountpoint' | 'fstype' | 'ext_key'>;
type HostMount = { dev: number; root: string; mountpoint: string };

export interface PlanOptions {
  /** --root: the tree's root on this host. */
  rootDir?: string;
  /** --external mnt[KEY]:PATH at restore: where each external mount is bound from. */
  external?: ReadonlyMap<string, string>;
  /** At dump, an external mount needs no plan: it is bound from what the restore maps its key to. */
  dumping?: boolean;
  /**
   * At restore: whether the dump took a tmpfs's contents (it had no host mount
   * then, so it is made anew: a host mount that has its device number now is
   * another filesystem, the number reused).
   */
  filled?: (dev: number) => boolean;
}

/** `root` under `base`: the path from base to root, or undefined. */
export function under(root: string, base: string): string | undefined {
  if (base === '/') return root;
  if (root === base) return '/';
  return root.startsWith(base + '/') ? root.slice(base.length) : undefined;
}

export function joinPath(a: string, b: string): string {
  return b === '/' ? a : a === '/' ? b : a + b;
}

const NS_BOUND: ReadonlySet<number | undefined> = new Set([FSTYPE.PROC, FSTYPE.SYSFS, FSTYPE.MQUEUE]);

const creatable = (m: Mnt) => m.root === '/' && m.fstype !== FSTYPE.UNSUPPORTED && m.fstype !== FSTYPE.OVERLAYFS && m.fstype !== FSTYPE.AUTOFS;

/** A plan of its own, needing no other mount of the tree: external, --root, ours, or made anew. */
function standalone(m: Mnt, host: HostMount[], o: PlanOptions): Plan | { error: string } | undefined {
  if (m.ext_key !== undefined) {
    if (o.dumping) return { how: 'host', from: `external:${m.ext_key}` };
    const from = o.external?.get(m.ext_key);
    return from !== undefined ? { how: 'host', from } : { error: `mount ${m.mountpoint} was dumped as external (key ${m.ext_key}): restore with --external mnt[${m.ext_key}]:PATH` };
  }
  if (m.mountpoint === '/' && o.rootDir) return { how: 'host', from: o.rootDir };
  if (m.fstype === FSTYPE.TMPFS && o.filled?.(m.root_dev)) return m.root === '/' ? { how: 'create' } : undefined;
  // What these show is the namespaces of whoever mounts them (pid, net, ipc):
  // mounted anew in the restored root, never taken from a host mount by a
  // device number that may have been reused since (a dead container's).
  if (NS_BOUND.has(m.fstype)) return m.root === '/' ? { how: 'create' } : undefined;
  for (const h of host) {
    const sub = h.dev === m.root_dev ? under(m.root, h.root) : undefined;
    if (sub !== undefined) return { how: 'host', from: joinPath(h.mountpoint, sub) };
  }
  return creatable(m) ? { how: 'create' } : undefined;
}

/**
 * How to re-create each mount. A mount of the tree's own filesystem that is
 * not its root (criu's masked /proc/keys bound from the container's /dev/null)
 * is bound from another mount of it, wherever that one is in the tree: see
 * buildOrder. `mounts` are parents first.
 */
export function planMounts(mounts: Mnt[], host: HostMount[], o: PlanOptions = {}): Map<number, Plan | { error: string }> {
  const plans = new Map<number, Plan | { error: string }>();
  for (const m of mounts) {
    const p = standalone(m, host, o);
    if (p) plans.set(m.mnt_id, p);
  }
  // Binds of binds are resolved pass after pass, each from a mount already planned.
  for (let grew = true; grew;) {
    grew = false;
    for (const m of mounts) {
      if (plans.has(m.mnt_id)) continue;
      for (const d of mounts) {
        const dp = plans.get(d.mnt_id);
        const sub = dp && !('error' in dp) && d.root_dev === m.root_dev ? under(m.root, d.root) : undefined;
        if (sub !== undefined) { plans.set(m.mnt_id, { how: 'bind', from: d.mnt_id, sub }); grew = true; break; }
      }
    }
  }
  for (const m of mounts) {
    if (plans.has(m.mnt_id)) continue;
    plans.set(m.mnt_id, { error: m.mountpoint === '/' ? 'the root of the mount namespace is not mounted here: restore with --root DIR' : `mount ${m.mountpoint} (device ${m.root_dev >>> 20}:${m.root_dev & 0xfffff}, ${m.root}) is neither mounted here nor a filesystem that can be made anew` });
  }
  return plans;
}

/**
 * The order to mount in: each mount after its parent and after the mount it
 * is bound from, otherwise as listed (so mounts stacked on one mountpoint keep
 * their order: the upper one's parent is the lower one).
 */
export function buildOrder<M extends Mnt>(mounts: M[], plans: Map<number, Plan | { error: string }>): M[] {
  const ids = new Set(mounts.map((m) => m.mnt_id));
  const placed = new Set<number>();
  const out: M[] = [];
  while (out.length < mounts.length) {
    const before = out.length;
    for (const m of mounts) {
      if (placed.has(m.mnt_id)) continue;
      const p = plans.get(m.mnt_id);
      const needs = [ids.has(m.parent_mnt_id) ? m.parent_mnt_id : undefined, p && 'how' in p && p.how === 'bind' ? p.from : undefined];
      if (needs.every((n) => n === undefined || placed.has(n))) { out.push(m); placed.add(m.mnt_id); }
    }
    if (out.length === before) throw new StasisError(ErrorCodes.UNSUPPORTED, `mounts ${mounts.filter((m) => !placed.has(m.mnt_id)).map((m) => m.mountpoint).join(', ')} are bound from each other`);
  }
  return out;
}

/**
 * criu's --external mnt[...] forms: at dump mnt[MOUNTPOINT]:KEY marks a mount
 * as external (not carried, bound at restore from what KEY maps to); at
 * restore mnt[KEY]:PATH says where. Other kinds of --external are refused.
 */
export function parseExternalMounts(specs: readonly string[], when: 'dump' | 'restore'): Map<string, string> {
  const out = new Map<string, string>();
  for (const s of specs) {
    if (when === 'dump' && s.startsWith('net[')) continue; // a network namespace's (net-external.ts)
    const m = /^mnt\[([^\]]+)\]:(.+)$/.exec(s);
    if (!m) {
      const kind = /^(\w+)\[/.exec(s)?.[1];
      throw new StasisError(ErrorCodes.USAGE, kind && kind !== 'mnt' ? `--external ${s}: external ${kind} resources are not supported (only mnt[...]${when === 'dump' ? ' and net[...]' : ''})` : `--external ${s}: expected mnt[${when === 'dump' ? 'MOUNTPOINT]:KEY' : 'KEY]:PATH'}`);
    }
    if (when === 'dump' && !m[1].startsWith('/')) throw new StasisError(ErrorCodes.USAGE, `--external ${s}: the mountpoint must be an absolute path in the tree's mount namespace`);
    if (when === 'restore' && !m[2].startsWith('/')) throw new StasisError(ErrorCodes.USAGE, `--external ${s}: the path must be absolute`);
    if (out.has(m[1])) throw new StasisError(ErrorCodes.USAGE, `--external ${s}: ${m[1]} given twice`);
    out.set(m[1], m[2]);
  }
  return out;
}
