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

type Mnt = Pick<Msg<'mnt_entry'>, 'mnt_id' | 'root_dev' | 'root' | 'mountpoint' | 'fstype'>;
type HostMount = { dev: number; root: string; mountpoint: string };

/** `root` under `base`: the path from base to root, or undefined. */
export function under(root: string, base: string): string | undefined {
  if (base === '/') return root;
  if (root === base) return '/';
  return root.startsWith(base + '/') ? root.slice(base.length) : undefined;
}

export function joinPath(a: string, b: string): string {
  return b === '/' ? a : a === '/' ? b : a + b;
}

/**
 * How to re-create each mount, parents first (`mounts` in mountinfo order is
 * parents first). `rootDir`: --root, the tree's root on this host.
 */
export function planMounts(mounts: Mnt[], host: HostMount[], rootDir?: string): Map<number, Plan | { error: string }> {
  const plans = new Map<number, Plan | { error: string }>();
  const done: Mnt[] = [];
  for (const m of mounts) {
    let plan: Plan | { error: string } | undefined;
    if (m.mountpoint === '/' && rootDir) plan = { how: 'host', from: rootDir };
    if (!plan) {
      for (const h of host) {
        const sub = h.dev === m.root_dev ? under(m.root, h.root) : undefined;
        if (sub !== undefined) { plan = { how: 'host', from: joinPath(h.mountpoint, sub) }; break; }
      }
    }
    if (!plan && m.root === '/' && m.fstype !== FSTYPE.UNSUPPORTED && m.fstype !== FSTYPE.OVERLAYFS && m.fstype !== FSTYPE.AUTOFS) plan = { how: 'create' };
    if (!plan) {
      for (const d of done) {
        const sub = d.root_dev === m.root_dev ? under(m.root, d.root) : undefined;
        if (sub !== undefined) { plan = { how: 'bind', from: d.mnt_id, sub }; break; }
      }
    }
    plans.set(m.mnt_id, plan ?? { error: m.mountpoint === '/' ? 'the root of the mount namespace is not mounted here: restore with --root DIR' : `mount ${m.mountpoint} (device ${m.root_dev >>> 20}:${m.root_dev & 0xfffff}, ${m.root}) is neither mounted here nor a filesystem that can be made anew` });
    done.push(m);
  }
  return plans;
}
