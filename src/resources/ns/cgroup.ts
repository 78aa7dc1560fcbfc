// Cgroups (v1 hierarchies and v2): which cgroups each thread is in (criu's
// cgroup.img: sets of (hierarchy, path), each thread's set in
// thread_core.cg_set), and the directories on those paths with their limits.
// On restore every task goes back into its cgroups (the root before its
// children exist, so they inherit them); missing directories are created
// (with their limits) or refused, as --manage-cgroups says (criu's modes). A
// cgroup namespace of the tree's own is rooted where it was (cgns_prefix).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseMountInfo } from '../../proc/mountinfo';
import { inNamespace } from '../../proc/ns';
import { parts, type Msg } from '../../images/image';
import { StasisError, ErrorCodes } from '../../errors';
import { defineUnit } from '../../unit/unit';
import type { DumpCtx } from '../../unit/dump-ctx';
import type { RestoreCtx } from '../../unit/restore-ctx';
import { namespacesUnit } from './namespaces';

export type CgroupMode = 'none' | 'props' | 'soft' | 'full' | 'strict' | 'ignore';
/** criu's --cgroup-root [CTRL:]PATH: a hierarchy's new root (no ctrl: every hierarchy not named). */
export interface CgroupRoot { ctrl?: string; path: string }
type Member = Msg<'cg_member_entry'>;
type Dir = Msg<'cgroup_dir_entry'>;

/** /proc/PID/cgroup: (controllers, path) per hierarchy; "" is cgroup v2. */
export function parseCgroups(text: string): { name: string; path: string }[] {
  return text.split('\n').filter(Boolean).map((l) => {
    const a = l.indexOf(':'), b = l.indexOf(':', a + 1);
    return { name: l.slice(a + 1, b), path: l.slice(b + 1) };
  });
}

/** Limits worth carrying, per controller (v2 names too): what a program or its manager sets. */
const PROPS: Record<string, string[]> = {
  cpu: ['cpu.shares', 'cpu.cfs_period_us', 'cpu.cfs_quota_us', 'cpu.rt_period_us', 'cpu.rt_runtime_us', 'cpu.max', 'cpu.weight'],
  memory: ['memory.limit_in_bytes', 'memory.soft_limit_in_bytes', 'memory.swappiness', 'memory.max', 'memory.high', 'memory.low', 'memory.min', 'memory.swap.max'],
  cpuset: ['cpuset.cpus', 'cpuset.mems', 'cpuset.cpu_exclusive', 'cpuset.mem_exclusive'],
  pids: ['pids.max'],
  // Read from devices.list; set by denying all, then allowing each line (criu's way).
  devices: ['devices.list'],
  blkio: ['blkio.weight'],
  hugetlb: [],
  '': ['pids.max', 'memory.max', 'memory.high', 'memory.low', 'memory.min', 'memory.swap.max', 'cpu.max', 'cpu.weight', 'cpuset.cpus', 'cpuset.mems', 'io.weight'],
};

/** Where a hierarchy is mounted here: cgroup2 for "", else the cgroup mount with exactly these controllers. */
export function hierarchyMount(name: string): string | undefined {
  const want = name.split(',').sort().join(',');
  for (const m of parseMountInfo(fs.readFileSync('/proc/self/mountinfo', 'utf8'))) {
    if (m.root !== '/') continue;
    if (name === '' && m.fstype === 'cgroup2') return m.mountpoint;
    if (name !== '' && m.fstype === 'cgroup') {
      const ctl = m.superOpts.filter((o) => !['rw', 'ro', 'nosuid', 'nodev', 'noexec', 'relatime', 'clone_children', 'xattr', 'noprefix'].includes(o) && !o.startsWith('release_agent=')).sort().join(',');
      if (ctl === want) return m.mountpoint;
    }
  }
  return undefined;
}

function perms(p: string): Msg<'cgroup_perms'> {
  const st = fs.statSync(p);
  return { mode: st.mode & 0o7777, uid: st.uid, gid: st.gid };
}

/** Every v1 hierarchy's own files (criu's global properties); and those whose owner and mode alone count (who may move tasks in). */
const V1_GLOBAL = ['cgroup.clone_children', 'notify_on_release'];
const PERMS_ONLY = new Set(['cgroup.procs', 'tasks', 'cgroup.threads']);

function dirEntry(mount: string, controllers: string[], rel: string, children: Dir[]): Dir {
  const p = path.join(mount, rel);
  const properties: Msg<'cgroup_prop_entry'>[] = [];
  const names = controllers.flatMap((c) => PROPS[c] ?? []);
  names.push(...(controllers[0] === '' ? ['cgroup.procs', 'cgroup.threads'] : [...V1_GLOBAL, 'cgroup.procs', 'tasks']));
  for (const prop of new Set(names)) {
    try {
      const value = PERMS_ONLY.has(prop) ? '' : fs.readFileSync(path.join(p, prop), 'utf8').trim();
      properties.push({ name: prop, value, perms: perms(path.join(p, prop)) });
    } catch { /* not here */ }
  }
  return { dir_name: rel, children, properties, dir_perms: perms(p) };
}

/** The cgroups below `rel` (empty ones too: a program may have made them and expect them), nested. */
function subtree(mount: string, controllers: string[], rel: string): Dir[] {
  return fs.readdirSync(path.join(mount, rel), { withFileTypes: true }).filter((e) => e.isDirectory())
    .map((e) => { const sub = path.join(rel, e.name); return dirEntry(mount, controllers, sub, subtree(mount, controllers, sub)); });
}

/** The directories from the hierarchy's root to `cg` and below it, nested, with their limits. */
function dirChain(mount: string, name: string, cg: string): Dir[] {
  const names = cg.split('/').filter(Boolean);
  const controllers = name === '' ? [''] : name.split(',');
  let out: Dir[] = names.length ? subtree(mount, controllers, names.join('/')) : [];
  for (let i = names.length; i > 0; i--) out = [dirEntry(mount, controllers, names.slice(0, i).join('/'), out)];
  return out;
}

function merge(into: Dir[], add: Dir[]): void {
  for (const d of add) {
    const have = into.find((x) => x.dir_name === d.dir_name);
    if (have) merge((have.children ??= []), d.children ?? []);
    else into.push(d);
  }
}

const setKey = (ms: { name: string; path: string }[]) => ms.map((m) => `${m.name}:${m.path}`).sort().join('\n');

function dumpCgroups(ctx: DumpCtx): void {
  const ours = parseCgroups(fs.readFileSync('/proc/self/cgroup', 'utf8'));
  const sets = new Map<string, number>([[setKey(ours), 1]]);
  const entries: Msg<'cg_set_entry'>[] = [{ id: 1, ctls: ours.map((m) => ({ name: m.name, path: m.path })) }];
  const ownNs = ctx.state(namespacesUnit).own.has('cgroup');
  const root = ctx.processes[0];
  // Inside its own cgroup namespace the tree sees its paths from the namespace's root: the prefix is where that root lies.
  const inner = ownNs ? inNamespace(root.pid, 'cgroup', () => parseCgroups(fs.readFileSync(`/proc/${root.pid}/cgroup`, 'utf8'))) : undefined;
  for (const pd of ctx.processes) {
    for (const tid of pd.frozen.threads) {
      const cg = parseCgroups(fs.readFileSync(`/proc/${pd.pid}/task/${tid}/cgroup`, 'utf8'));
      const key = setKey(cg);
      let id = sets.get(key);
      if (id === undefined) {
        id = sets.size + 1;
        sets.set(key, id);
        entries.push({
          id, ctls: cg.map((m): Member => {
            const inPath = inner?.find((x) => x.name === m.name)?.path;
            const prefix = inPath && inPath !== '/' && m.path.endsWith(inPath) ? m.path.length - inPath.length : inPath === '/' ? m.path.length : undefined;
            return { name: m.name, path: m.path, cgns_prefix: ownNs && prefix ? prefix : undefined };
          }),
        });
      }
      pd.core.get(tid)!.thread_core!.cg_set = id;
    }
  }
  if (entries.length === 1) return; // every task in our cgroups: nothing to write, as criu
  const controllers: Msg<'cg_controller_entry'>[] = [];
  for (const e of entries.slice(1)) {
    // Hierarchies where the tree is where we are need nothing (it is born there).
    for (const m of (e.ctls ?? []).filter((x) => !ours.some((o) => o.name === x.name && o.path === x.path))) {
      const mount = hierarchyMount(m.name);
      if (!mount) throw new StasisError(ErrorCodes.UNSUPPORTED, `cgroup hierarchy '${m.name || 'cgroup2'}' of the tree is not mounted here`);
      let c = controllers.find((x) => (x.cnames ?? []).join(',') === m.name);
      if (!c) controllers.push((c = { cnames: [m.name], dirs: [] }));
      merge(c.dirs!, dirChain(mount, m.name, m.path));
    }
  }
  ctx.write('cgroup.img', 'CGROUP', parts('cgroup_entry', [{ sets: entries, controllers }]));
}

interface Loaded { sets: Map<number, Member[]>; dirs: Map<string, Dir>; rootSet: number | undefined }

function dirByPath(dirs: Dir[], name: string, out: Map<string, Dir>): void {
  for (const d of dirs) {
    out.set(`${name}:${d.dir_name}`, d);
    dirByPath(d.children ?? [], name, out);
  }
}

/** Make (as the mode allows) the directories on a path, with their limits where we made them or the mode says. */
function ensurePath(ctx: RestoreCtx, l: Loaded, m: Member, made: string[], mode: CgroupMode): string {
  const mount = hierarchyMount(m.name)!;
  const names = m.path.split('/').filter(Boolean);
  for (let i = 1; i <= names.length; i++) {
    const rel = names.slice(0, i).join('/');
    const p = path.join(mount, rel);
    const d = l.dirs.get(`${m.name}:${rel}`);
    let created = false;
    if (!fs.existsSync(p)) {
      if (mode === 'none' || mode === 'props') throw new StasisError(ErrorCodes.RESTORE_FAILED, `cgroup ${p} does not exist (--manage-cgroups ${mode} creates none)`);
      fs.mkdirSync(p);
      made.push(p);
      created = true;
      if (d?.dir_perms) { fs.chmodSync(p, d.dir_perms.mode); fs.chownSync(p, d.dir_perms.uid, d.dir_perms.gid); }
    } else if (mode === 'strict' && i === names.length && l.dirs.has(`${m.name}:${rel}`)) {
      throw new StasisError(ErrorCodes.RESTORE_FAILED, `cgroup ${p} exists already (--manage-cgroups strict)`);
    }
    if (d && (created ? mode !== 'none' : mode === 'props' || mode === 'full' || mode === 'strict')) setProps(ctx, p, d);
  }
  if (mode !== 'none' && mode !== 'props') makeBelow(ctx, mount, l.dirs.get(`${m.name}:${names.join('/')}`)?.children ?? [], made);
  return path.join(mount, ...names);
}

/** The cgroups that were below a task's (no task in them), made again where missing, with their limits. */
function makeBelow(ctx: RestoreCtx, mount: string, dirs: Dir[], made: string[]): void {
  for (const d of dirs) {
    const p = path.join(mount, d.dir_name);
    if (!fs.existsSync(p)) {
      fs.mkdirSync(p);
      made.push(p);
      if (d.dir_perms) { fs.chmodSync(p, d.dir_perms.mode); fs.chownSync(p, d.dir_perms.uid, d.dir_perms.gid); }
      setProps(ctx, p, d);
    }
    makeBelow(ctx, mount, d.children ?? [], made);
  }
}

/** The devices a v1 devices cgroup allows, one rule a line as devices.list shows them. */
function setDevices(p: string, list: string): void {
  if (fs.readFileSync(path.join(p, 'devices.list'), 'utf8').trim() === list) return;
  fs.writeFileSync(path.join(p, 'devices.deny'), 'a');
  for (const rule of list.split('\n').filter(Boolean)) fs.writeFileSync(path.join(p, 'devices.allow'), rule);
}

function setProps(ctx: RestoreCtx, p: string, d: Dir): void {
  for (const prop of d.properties ?? []) {
    const file = path.join(p, prop.name);
    if (prop.name.includes('/')) throw new StasisError(ErrorCodes.BAD_IMAGE, `cgroup.img: bad cgroup property ${prop.name}`);
    try {
      if (prop.name === 'devices.list') setDevices(p, prop.value);
      else if (!PERMS_ONLY.has(prop.name) && fs.readFileSync(file, 'utf8').trim() !== prop.value) fs.writeFileSync(file, prop.value);
      if (prop.perms) { fs.chmodSync(file, prop.perms.mode); fs.chownSync(file, prop.perms.uid, prop.perms.gid); }
    } catch (e) {
      ctx.warnings.push(`cgroup ${p}: ${prop.name} could not be set to ${prop.value} (${(e as NodeJS.ErrnoException).code})`);
    }
  }
}

/** The members of a set that are not where we are (a task born of ours is there already). */
function elsewhere(members: Member[]): Member[] {
  const ours = parseCgroups(fs.readFileSync('/proc/self/cgroup', 'utf8'));
  return members.filter((m) => !ours.some((o) => o.name === m.name && o.path === m.path));
}

/** Put task `pid` (our id) into the set's cgroups (`cut`: only down to the cgroup namespace's root). */
function join(ctx: RestoreCtx, l: Loaded, set: number, pid: number, thread: boolean, st: string[], cut = false): void {
  for (const m of elsewhere(l.sets.get(set) ?? [])) {
    const target = cut && m.cgns_prefix !== undefined ? { ...m, path: m.path.slice(0, m.cgns_prefix) || '/' } : m;
    const dir = ensurePath(ctx, l, target, st, ctx.opts.manageCgroups ?? 'soft');
    fs.writeFileSync(path.join(dir, thread ? (m.name === '' ? 'cgroup.threads' : 'tasks') : 'cgroup.procs'), String(pid));
  }
}

/** The root's cgroup in hierarchy `name` is `path` now: it, and every cgroup under it, moved there (as criu's --cgroup-root). */
function moveRoots(roots: CgroupRoot[], sets: Map<number, Member[]>, dirs: Map<string, Dir>, rootSet: number): void {
  const inside = (p: string, base: string) => (p === base ? '' : base === '/' ? p : p.startsWith(base + '/') ? p.slice(base.length) : undefined);
  for (const m of sets.get(rootSet)!) {
    const r = roots.find((x) => x.ctrl && (x.ctrl === m.name || m.name.split(',').includes(x.ctrl))) ?? roots.find((x) => !x.ctrl);
    if (!r || r.path === m.path) continue;
    const from = m.path;
    const to = (rest: string) => path.posix.join(r.path, rest || '.');
    for (const s of sets.values()) {
      for (const x of s) {
        const rest = x.name === m.name ? inside(x.path, from) : undefined;
        if (rest !== undefined) x.path = to(rest);
      }
    }
    for (const [k, d] of [...dirs]) {
      const [name, rel] = [k.slice(0, k.indexOf(':')), k.slice(k.indexOf(':') + 1)];
      const rest = name === m.name ? inside('/' + rel, from) : undefined;
      if (rest !== undefined) { dirs.delete(k); dirs.set(`${name}:${to(rest).slice(1)}`, d); }
    }
  }
}

export const cgroupUnit = defineUnit({
  name: 'cgroup',
  dumpPhases: [{ name: 'cgroups', after: ['namespaces'], before: ['write-core'], once: dumpCgroups }],
  loadAfter: ['namespaces'],
  load(ld): Loaded {
    const sets = new Map<number, Member[]>();
    const dirs = new Map<string, Dir>();
    if (ld.images.exists('cgroup.img')) {
      const e = ld.images.one('cgroup.img', 'CGROUP', 'cgroup_entry');
      for (const s of e.sets ?? []) {
        for (const m of s.ctls ?? []) if (m.path.split('/').includes('..')) throw new StasisError(ErrorCodes.BAD_IMAGE, `${ld.images.path('cgroup.img')}: bad cgroup path ${m.path}`);
        sets.set(s.id, s.ctls ?? []);
      }
      for (const c of e.controllers ?? []) dirByPath(c.dirs ?? [], (c.cnames ?? []).join(','), dirs);
      for (const k of dirs.keys()) if (k.slice(k.indexOf(':') + 1).split('/').includes('..')) throw new StasisError(ErrorCodes.BAD_IMAGE, `${ld.images.path('cgroup.img')}: bad cgroup directory ${k}`);
    }
    const rootSet = ld.processes[0].threads[0].core.thread_core?.cg_set;
    if (ld.opts.cgroupRoots?.length && rootSet !== undefined && sets.has(rootSet)) moveRoots(ld.opts.cgroupRoots, sets, dirs, rootSet);
    return { sets, dirs, rootSet };
  },
  validate(ld, l) {
    if (ld.opts.manageCgroups === 'ignore') return;
    for (const p of ld.processes) for (const th of p.threads) {
      const id = th.core.thread_core?.cg_set;
      if (id === undefined || id === 1 || !l.sets.size) continue;
      if (!l.sets.has(id)) throw new StasisError(ErrorCodes.BAD_IMAGE, `${ld.images.path(`core-${th.tid}.img`)}: cgroup set ${id} absent from cgroup.img`);
      for (const m of elsewhere(l.sets.get(id)!)) if (!hierarchyMount(m.name)) throw new StasisError(ErrorCodes.UNSUPPORTED, `cgroup hierarchy '${m.name || 'cgroup2'}' is not mounted here`);
    }
  },
  restoreState: () => [] as string[],
  // Directories we made go when the restore fails (children first).
  cleanup(_ctx, made, ok) { if (!ok) for (const d of [...made].reverse()) try { fs.rmdirSync(d); } catch { /* in use or gone */ } },
  restorePhases: [
    {
      // Born where its cgroup namespace is rooted (the stub's cgroups at the clone), or in its own cgroups.
      name: 'cgroups', stage: 'stub', before: ['namespaces'],
      once(ctx, l, made) {
        if (ctx.opts.manageCgroups === 'ignore' || l.rootSet === undefined || l.rootSet === 1 || !l.sets.size) return;
        join(ctx, l, l.rootSet, ctx.stub!.pid, false, made, true);
      },
    },
    {
      name: 'cgroups-root', stage: 'root',
      once(ctx, l, made) {
        if (ctx.opts.manageCgroups === 'ignore' || l.rootSet === undefined || l.rootSet === 1 || !l.sets.size) return;
        join(ctx, l, l.rootSet, ctx.tasks.values().next().value!.task.pid, false, made);
      },
    },
    {
      // Children whose set differs from their parent's, then threads: before anything else they could fork.
      name: 'cgroups-tree', before: ['threads'],
      each(ctx, tr, l, made) {
        if (ctx.opts.manageCgroups === 'ignore' || !l.sets.size) return;
        if (tr.img.pid === ctx.ckpt.processes[0].pid) return;
        const set = tr.img.threads[0].core.thread_core?.cg_set;
        const parent = ctx.tasks.get(tr.img.ppid)?.img.threads[0].core.thread_core?.cg_set;
        // Born in its parent's cgroups: moved when its own differ (ours, set 1, included).
        if (set !== undefined && set !== parent) join(ctx, l, set, tr.task.pid, false, made);
      },
    },
    {
      name: 'cgroups-threads', after: ['threads'],
      each(ctx, tr, l, made) {
        if (ctx.opts.manageCgroups === 'ignore' || !l.sets.size) return;
        const lead = tr.img.threads[0].core.thread_core?.cg_set;
        for (const th of tr.img.threads.slice(1)) {
          const set = th.core.thread_core?.cg_set;
          if (set !== undefined && set !== lead) join(ctx, l, set, tr.threads.get(th.tid)!.pid, true, made);
        }
      },
    },
  ],
});
