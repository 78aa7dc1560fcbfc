// Mount namespace of its own: its mounts from the root's mountinfo
// (mountpoints-ID.img, criu's mnt_entry), the contents of its own tmpfs
// mounts (tmpfs-dev-DEV.tar.gz.img, a tar as criu makes it, taken from a
// detached clone of the mount made in the root task). Restore builds the
// tree in the root, in its new mount namespace: everything private, a tmpfs
// yard, each mount at yard/root + mountpoint (see mnt-plan.ts for how),
// propagation groups, then pivot_root into it.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { childProcess } from '../../node-lazy';
import { abi, pidfdOpen, pidfdGetfd, sysTry } from '../../sys';
import { cstr, type RemoteTask } from '../../compel/remote';
import { withHelperTask } from '../../compel/helper-task';
import { parseMountInfo, kdev, optionalField, type MountInfo } from '../../proc/mountinfo';
import { nsId } from '../../proc/ns';
import { parts, type Msg, type ImageReader } from '../../images/image';
import { StasisError, ErrorCodes, SyscallError } from '../../errors';
import { defineUnit } from '../../unit/unit';
import type { RestoreCtx } from '../../unit/restore-ctx';
import type { DumpCtx } from '../../unit/dump-ctx';
import type { LoadOptions } from '../../unit/checkpoint';
import { namespacesUnit } from './namespaces';
import { planMounts, buildOrder, parseExternalMounts, fstypeOf, mountFlags, sbFlags, fsOptions, joinPath, FSTYPE, type Plan } from './mnt-plan';

const { MS, MNT_DETACH, OPEN_TREE, AT_FDCWD, MOVE_MOUNT, O, CLONE } = abi;
type Mnt = Msg<'mnt_entry'>;

const tarName = (dev: number) => `tmpfs-dev-${dev}.tar.gz.img`;

function hostMounts(): { dev: number; root: string; mountpoint: string }[] {
  return parseMountInfo(fs.readFileSync('/proc/self/mountinfo', 'utf8')).map((m) => ({ dev: kdev(m.dev), root: m.root, mountpoint: m.mountpoint }));
}

function mntEntry(m: MountInfo): Mnt {
  return {
    fstype: fstypeOf(m.fstype), mnt_id: m.id, root_dev: kdev(m.dev), parent_mnt_id: m.parent, flags: mountFlags(m),
    root: m.root, mountpoint: m.mountpoint, source: m.source, options: fsOptions(m), shared_id: optionalField(m, 'shared'),
    master_id: optionalField(m, 'master'), sb_flags: sbFlags(m), fsname: m.fstype,
  };
}

/** Mounts with every parent before its children (the namespace's root first). */
function parentsFirst(info: MountInfo[]): MountInfo[] {
  const ids = new Set(info.map((m) => m.id));
  const out: MountInfo[] = [];
  const add = (parent: number | undefined) => {
    for (const m of info) if ((parent === undefined ? !ids.has(m.parent) : m.parent === parent) && !out.includes(m)) { out.push(m); add(m.id); }
  };
  add(undefined);
  return out;
}

interface DumpState { mounts: Mnt[]; tmpfs: Map<number, { mountpoint: string; fd?: number }> }

/**
 * The peer groups (shared and master) of the mounts of every mount namespace
 * but `pid`'s: ours, and those of every process outside it (one view each).
 * Not ours only: a container's mounts may be peers of its runtime's.
 */
function groupsOutside(pid: number): Set<number> {
  const seen = new Set<number | undefined>([nsId(pid, 'mnt')]);
  const out = new Set<number>();
  for (const who of ['self', ...fs.readdirSync('/proc').filter((e) => /^\d+$/.test(e))]) {
    const ns = nsId(who === 'self' ? 'self' : Number(who), 'mnt');
    if (ns === undefined || seen.has(ns)) continue;
    seen.add(ns);
    let text: string;
    try { text = fs.readFileSync(`/proc/${who}/mountinfo`, 'utf8'); } catch { continue; } // gone meanwhile
    for (const m of parseMountInfo(text)) {
      for (const g of [optionalField(m, 'shared'), optionalField(m, 'master')]) if (g !== undefined) out.add(g);
    }
  }
  return out;
}

function scan(pid: number, st: DumpState, external: Map<string, string>): void {
  const info = parseMountInfo(fs.readFileSync(`/proc/${pid}/mountinfo`, 'utf8'));
  st.mounts = parentsFirst(info).map(mntEntry);
  for (const [mountpoint, key] of external) {
    const m = [...st.mounts].reverse().find((x) => x.mountpoint === mountpoint);
    if (!m) throw new StasisError(ErrorCodes.USAGE, `--external mnt[${mountpoint}]:${key}: pid ${pid}'s mount namespace has no mount at ${mountpoint}`);
    m.ext_mount = true;
    m.ext_key = key;
  }
  // Propagation shared with mounts of any other namespace would be cut at restore: refused.
  const outside = groupsOutside(pid);
  for (const m of st.mounts) {
    const g = [m.shared_id, m.master_id].find((x) => x !== undefined && outside.has(x));
    if (g !== undefined) throw new StasisError(ErrorCodes.UNSUPPORTED, `pid ${pid}'s mount ${m.mountpoint} propagates to or from mounts outside its namespace (peer group ${g}); not supported`);
  }
  const plans = planMounts(st.mounts, hostMounts(), { dumping: true });
  for (const m of st.mounts) {
    const p = plans.get(m.mnt_id)!;
    if ('error' in p) throw new StasisError(ErrorCodes.UNSUPPORTED, `pid ${pid}'s mount namespace: ${p.error}`);
    if (p.how === 'create' && m.fstype === FSTYPE.TMPFS && !st.tmpfs.has(m.root_dev)) st.tmpfs.set(m.root_dev, { mountpoint: m.mountpoint });
  }
  buildOrder(st.mounts, plans);
}

/**
 * A detached clone of each tmpfs, made inside the tree's mount namespace by a
 * helper task of ours (the tree's tasks may lack the capability), so what lies
 * under its submounts is seen too.
 */
function cloneTmpfs(pid: number, st: DumpState): void {
  withHelperTask((t) => {
    const ns = t.callNum('openat', AT_FDCWD, cstr(`/proc/${pid}/ns/mnt`), O.RDONLY | O.CLOEXEC, 0);
    t.call('setns', ns, CLONE.NEWNS);
    const pidfd = pidfdOpen(t.pid);
    try {
      for (const tm of st.tmpfs.values()) {
        const fd = t.callNum('open_tree', AT_FDCWD, cstr(tm.mountpoint), OPEN_TREE.CLONE | OPEN_TREE.CLOEXEC);
        tm.fd = pidfdGetfd(pidfd, fd);
      }
    } finally {
      sysTry('close', pidfd);
    }
  });
}

/** A tar of a detached clone of the mount (what lies under its submounts included), as criu's. */
function tarTmpfs(fd: number, out: { fd: number; path: string }): void {
  const r = childProcess().spawnSync('tar', ['--create', '--gzip', '--no-unquote', '--no-wildcards', '--one-file-system', '--check-links', '--preserve-permissions',
    '--sparse', '--numeric-owner', '--directory', '/proc/self/fd/0', '.'], { stdio: [fd, out.fd, 'pipe'], encoding: 'utf8' });
  if (r.status !== 0) throw new StasisError(ErrorCodes.UNSUPPORTED, `cannot archive a tmpfs for ${out.path}: ${r.error?.message ?? r.stderr.trim()}`);
}

/** The ids of the tree's own mounts (undefined: it shares our mount namespace). */
export function treeMounts(ctx: DumpCtx): Set<number> | undefined {
  if (!ctx.state(namespacesUnit).own.has('mnt')) return undefined;
  return new Set(ctx.state(mntUnit).mounts.map((m) => m.mnt_id));
}

export const mntUnit = defineUnit({
  name: 'mnt',
  dumpState: (): DumpState => ({ mounts: [], tmpfs: new Map() }),
  dumpPhases: [
    { name: 'mnt-scan', after: ['namespaces'], before: ['parasite'], once(ctx, st) {
      const external = parseExternalMounts(ctx.opts.external ?? [], 'dump');
      if (ctx.state(namespacesUnit).own.has('mnt')) scan(ctx.processes[0].pid, st, external);
      else if (external.size) throw new StasisError(ErrorCodes.USAGE, `--external mnt[...]: pid ${ctx.processes[0].pid} has no mount namespace of its own`);
    } },
    {
      name: 'mnt', after: ['parasite'],
      once(ctx, st) {
        if (!ctx.state(namespacesUnit).own.has('mnt')) return;
        ctx.write(`mountpoints-${ctx.processes[0].ids.mnt_ns_id}.img`, 'MNTS', parts('mnt_entry', st.mounts));
        if (st.tmpfs.size) cloneTmpfs(ctx.processes[0].pid, st);
        for (const [dev, t] of st.tmpfs) {
          const out = ctx.out.create(tarName(dev));
          try { tarTmpfs(t.fd!, { fd: out.handOver(), path: out.path }); } finally { out.close(); }
        }
      },
    },
  ],
  beforeRelease(_ctx, st) { for (const t of st.tmpfs.values()) if (t.fd !== undefined) sysTry('close', t.fd); },
  loadAfter: ['namespaces'],
  load(ld) {
    if (!ld.loaded(namespacesUnit).has('mnt')) return undefined;
    const file = `mountpoints-${ld.processes[0].ids.mnt_ns_id}.img`;
    const mounts = ld.images.read(file, 'MNTS', 'mnt_entry');
    const ids = new Set<number>();
    mounts.forEach((m, i) => {
      if (!m.mountpoint.startsWith('/') || m.mountpoint.split('/').includes('..')) throw new StasisError(ErrorCodes.BAD_IMAGE, `${ld.images.path(file)}: bad mountpoint ${m.mountpoint}`);
      if (i > 0 && !ids.has(m.parent_mnt_id)) throw new StasisError(ErrorCodes.BAD_IMAGE, `${ld.images.path(file)}: mount ${m.mnt_id} is listed before its parent ${m.parent_mnt_id}`);
      ids.add(m.mnt_id);
    });
    if (mounts[0]?.mountpoint !== '/') throw new StasisError(ErrorCodes.BAD_IMAGE, `${ld.images.path(file)}: the first mount is not the root`);
    return mounts;
  },
  validate(ld, mounts) {
    if (!mounts) return;
    const plans = planMounts(mounts, hostMounts(), planOptions(ld.opts, ld.images));
    buildOrder(mounts, plans);
    for (const m of mounts) {
      const p = plans.get(m.mnt_id)!;
      if ('error' in p) throw new StasisError(ErrorCodes.UNSUPPORTED, `cannot rebuild the mount namespace: ${p.error}`);
      if (p.how === 'create' && m.fstype === FSTYPE.TMPFS && !ld.images.exists(tarName(m.root_dev))) throw new StasisError(ErrorCodes.BAD_IMAGE, `${ld.images.path(tarName(m.root_dev))}: missing (the contents of tmpfs ${m.mountpoint})`);
    }
  },
  restoreState: () => ({ yard: undefined as string | undefined }),
  cleanup(_ctx, st) { if (st.yard) fs.rmSync(st.yard, { recursive: true, force: true }); },
  restorePhases: [{
    name: 'mnt', stage: 'root',
    once(ctx, mounts, st) {
      if (!mounts) return;
      const root = ctx.tasks.values().next().value!;
      st.yard = fs.mkdtempSync(path.join(os.tmpdir(), '.stasis-mnt-'));
      buildTree(ctx, root.task, mounts, st.yard);
      ctx.fsRoot = `/proc/${root.task.pid}/root`;
    },
  }],
});

function planOptions(o: LoadOptions, images: ImageReader) {
  return { rootDir: o.root, external: parseExternalMounts(o.external ?? [], 'restore'), filled: (dev: number) => images.exists(tarName(dev)) };
}

/** Build the mount tree in the root's new namespace and pivot into it. */
function buildTree(ctx: RestoreCtx, t: RemoteTask, mounts: Mnt[], yard: string): void {
  const mount = (src: string | null, dst: string, type: string | null, flags: number, data: string | null) =>
    t.call('mount', src === null ? 0 : cstr(src), cstr(dst), type === null ? 0 : cstr(type), flags, data === null ? 0 : cstr(data));
  // Nothing we do here may reach the namespace we were copied from.
  mount(null, '/', null, MS.REC | MS.PRIVATE, null);
  mount('stasis-yard', yard, 'tmpfs', 0, 'mode=0700');
  const top = path.join(yard, 'root');
  t.call('mkdirat', AT_FDCWD, cstr(top), 0o755);
  const plans = planMounts(mounts, hostMounts(), planOptions(ctx.opts, ctx.ckpt.images));
  const at = new Map<number, string>();
  for (const m of buildOrder(mounts, plans)) {
    const p = plans.get(m.mnt_id) as Plan;
    try {
      makeMount(ctx, t, m, p, top, at, mount);
    } catch (e) {
      if (!(e instanceof SyscallError)) throw e;
      const how = p.how === 'create' ? `a new ${m.fsname ?? 'filesystem'}` : p.how === 'host' ? `bound from ${p.from}` : `bound from the tree's mount ${at.get(p.from)?.slice(top.length) || '/'} (${p.sub})`;
      throw new StasisError(ErrorCodes.RESTORE_FAILED, `mount ${m.mountpoint} (${how}): ${e.message}`, { cause: e });
    }
  }
  restoreSharing(t, mounts, at);
  t.call('chdir', cstr(top));
  t.call('pivot_root', cstr('.'), cstr('.'));
  t.call('umount2', cstr('.'), MNT_DETACH);
  t.call('chdir', cstr('/'));
}

type MountCall = (src: string | null, dst: string, type: string | null, flags: number, data: string | null) => bigint;

/** One mount of the tree at top + its mountpoint, as its plan says. */
function makeMount(ctx: RestoreCtx, t: RemoteTask, m: Mnt, p: Plan, top: string, at: Map<number, string>, mount: MountCall): void {
  const target = m.mountpoint === '/' ? top : joinPath(top, m.mountpoint);
  if (m.mountpoint !== '/') ensureMountpoint(t, target, p, at);
  const keepFlags = m.flags & (MS.RDONLY | MS.NOSUID | MS.NODEV | MS.NOEXEC | MS.NOATIME | MS.NODIRATIME | MS.RELATIME | MS.STRICTATIME | MS.NOSYMFOLLOW);
  if (p.how === 'create') {
    const opts = m.fstype === FSTYPE.DEVPTS && !m.options.includes('newinstance') ? [m.options, 'newinstance'].filter(Boolean).join(',') : m.options;
    const sb = m.sb_flags ?? 0;
    if (m.fstype !== FSTYPE.TMPFS) mount(m.source, target, m.fsname ?? 'tmpfs', keepFlags | sb, opts || null);
    else {
      // Filled while writable, then made read-only as it was (the superblock, then the mount).
      mount(m.source, target, 'tmpfs', (keepFlags | sb) & ~MS.RDONLY, opts || null);
      untar(ctx, m, t.pid, target);
      if (sb & MS.RDONLY) mount(null, target, null, MS.REMOUNT | sb, opts || null);
      if (keepFlags & MS.RDONLY) mount(null, target, null, MS.REMOUNT | MS.BIND | keepFlags, null);
    }
  } else {
    const from = p.how === 'host' ? p.from : joinPath(at.get(p.from)!, p.sub);
    mount(from, target, null, MS.BIND, null);
    mount(null, target, null, MS.REMOUNT | MS.BIND | keepFlags, null);
  }
  mount(null, target, null, MS.PRIVATE, null);
  at.set(m.mnt_id, target);
}

/** The mountpoint's directory (or file, for a bind of a file) in what is mounted below it. */
function ensureMountpoint(t: RemoteTask, target: string, p: Plan, at: Map<number, string>): void {
  const exists = t.callRaw('faccessat', AT_FDCWD, cstr(target), 0, 0) === 0n;
  if (exists) return;
  const parent = path.dirname(target);
  if (t.callRaw('faccessat', AT_FDCWD, cstr(parent), 0, 0) !== 0n) ensureMountpoint(t, parent, { how: 'create' }, at);
  const srcIsFile = p.how !== 'create' && (() => {
    try { return fs.statSync(p.how === 'host' ? p.from : `/proc/${t.pid}/root${joinPath(at.get(p.from)!, p.sub)}`).isFile(); } catch { return false; }
  })();
  if (srcIsFile) t.call('close', t.callNum('openat', AT_FDCWD, cstr(target), O.CREAT | O.WRONLY | O.CLOEXEC, 0o644));
  else t.call('mkdirat', AT_FDCWD, cstr(target), 0o755);
}

/** Extract a tmpfs's contents, from outside, through the root's view of the new mount. */
function untar(ctx: RestoreCtx, m: Mnt, rootPid: number, target: string): void {
  const img = ctx.ckpt.images.open(tarName(m.root_dev));
  try {
    const r = childProcess().spawnSync('tar', ['--extract', '--gzip', '--no-unquote', '--no-wildcards', '--numeric-owner', '--preserve-permissions', '--directory', `/proc/${rootPid}/root${target}`],
      { stdio: [img, 'ignore', 'pipe'], encoding: 'utf8' });
    if (r.status !== 0) throw new StasisError(ErrorCodes.RESTORE_FAILED, `cannot fill tmpfs ${m.mountpoint}: ${r.error?.message ?? r.stderr.trim()}`);
  } finally {
    fs.closeSync(img);
  }
}

/** Peer groups and slaves among the tree's mounts (MOVE_MOUNT_SET_GROUP), unbindable last. */
function restoreSharing(t: RemoteTask, mounts: Mnt[], at: Map<number, string>): void {
  const withPath = (p: string, f: (fd: number) => void) => {
    const fd = t.callNum('openat', AT_FDCWD, cstr(p), O.PATH | O.CLOEXEC, 0);
    try { f(fd); } finally { t.call('close', fd); }
  };
  const setGroup = (from: string, to: string) => withPath(from, (a) => withPath(to, (b) =>
    t.call('move_mount', a, cstr(''), b, cstr(''), MOVE_MOUNT.SET_GROUP | MOVE_MOUNT.F_EMPTY_PATH | MOVE_MOUNT.T_EMPTY_PATH)));
  const firstOf = new Map<number, Mnt>();
  const byShared = (id: number) => mounts.filter((m) => m.shared_id === id).sort((a, b) => a.root.length - b.root.length);
  const flag = (p: string, f: number) => t.call('mount', 0, cstr(p), 0, f, 0);
  // Masters before slaves: a group whose master is in the tree is made after that master's group.
  const groups = [...new Set(mounts.flatMap((m) => [m.shared_id, m.master_id]).filter((x): x is number => x !== undefined))];
  const made = new Set<number>();
  const make = (id: number) => {
    if (made.has(id)) return;
    made.add(id);
    const members = byShared(id);
    if (!members.length) throw new StasisError(ErrorCodes.UNSUPPORTED, `mount propagation: peer group ${id} is mastered from outside the tree; not supported`);
    flag(at.get(members[0].mnt_id)!, MS.SHARED);
    for (const m of members.slice(1)) setGroup(at.get(members[0].mnt_id)!, at.get(m.mnt_id)!);
    firstOf.set(id, members[0]);
  };
  for (const g of groups) if (mounts.some((m) => m.shared_id === g)) make(g);
  for (const m of mounts) {
    if (m.master_id === undefined) continue;
    make(m.master_id);
    const master = firstOf.get(m.master_id)!;
    if (m.shared_id !== undefined && firstOf.get(m.shared_id) === m) {
      // A shared slave: slave of its master, then shared again in its own group.
      setGroup(at.get(master.mnt_id)!, at.get(m.mnt_id)!);
      flag(at.get(m.mnt_id)!, MS.SLAVE);
      flag(at.get(m.mnt_id)!, MS.SHARED);
    } else if (m.shared_id === undefined) {
      setGroup(at.get(master.mnt_id)!, at.get(m.mnt_id)!);
      flag(at.get(m.mnt_id)!, MS.SLAVE);
    }
  }
  for (const m of mounts) if (m.flags & MS.UNBINDABLE) flag(at.get(m.mnt_id)!, MS.UNBINDABLE);
}
