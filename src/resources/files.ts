// The fd table and the table of files. fdinfo-ID.img holds each fd (number,
// close-on-exec, file id); files.img holds every file entry, of whatever
// kind, once: an open file description shared by several fds (kcmp
// KCMP_FILE) or processes gets one id, and so stays shared after restore.
// Mappings, cwd/root and the exe link name file entries too.
import * as fs from 'node:fs';
import { abi, kcmp } from '../sys';
import { listFds, readFdInfo, readStatus } from '../proc/proc';
import { parts, type Msg } from '../images/image';
import { FD_TYPE_NAMES, FDINFO_CLOEXEC, FD_TYPES } from '../images/criu';
import { StasisError, ErrorCodes, remoteResult } from '../errors';
import { defineUnit, type AnyUnit, type FdDesc, type FileKind, type ParasiteCalls, type RemoteCall } from '../unit/unit';
import type { DumpCtx, ProcessDump } from '../unit/dump-ctx';
import type { RestoreCtx, TaskRestore } from '../unit/restore-ctx';
import type { Loading, ProcessImage } from '../unit/checkpoint';
import { outBuf, inBuf, type RemoteTask } from '../compel/remote';
import { giveFd } from '../compel/give-fd';

const { O, KCMP, F, F_OWNER, F_OWNER_EX } = abi;
type FileEntry = Msg<'file_entry'>;

/** The units with a file part: set by the registry (it imports every unit; this file must not). */
let fileUnits: AnyUnit[] = [];
export function registerFileKinds(units: AnyUnit[]): void { fileUnits = units.filter((u) => u.file); }
export function fileUnitOfType(type: number): AnyUnit | undefined { return fileUnits.find((u) => u.file!.type === type); }
// eslint-disable-next-line @typescript-eslint/no-explicit-any
function kindOf(u: AnyUnit): FileKind<any, unknown, unknown, unknown> { return u.file!; }

interface DumpState {
  /** files.img entries (written in id order). */
  entries: FileEntry[];
  keys: Map<string, number>;
  lastId: number;
  /** Every fd seen so far, to find open file descriptions shared across fds and processes. */
  seen: { pid: number; fd: number; dev: number; ino: number; id: number }[];
  /** Owners of fds that have one (F_SETOWN, F_SETSIG), by "pid:fd" (our pid). */
  owners: Map<string, Fown>;
}

type Fown = Msg<'fown_entry'>;

interface Loaded {
  files: Map<number, FileEntry>;
  /** fd table of each process, by pid. */
  fdinfo: Map<number, Msg<'fdinfo_entry'>[]>;
}

interface RestoreState {
  /** Where each restored file (open file description) can be fetched from. */
  holders: Map<number, { pid: number; fd: number }>;
  /** Temporary fds to close once every process has its files. */
  parked: { pid: number; fd: number }[];
  /** Files made outside the fd table (in flight in a socket's queue), finished with the task's fds. */
  late: { pid: number; id: number; fd: number }[];
}

function describeFd(st: fs.Stats, link: string): string {
  if (st.isCharacterDevice()) return `character device ${link}`;
  if (st.isBlockDevice()) return `block device ${link}`;
  if (st.isFIFO()) return `FIFO ${link}`;
  if (st.isSocket()) return `socket ${link}`;
  return link;
}

/** fdinfo-N.img of one process: each fd matched to its kind, one file id per open file description. */
function dumpFdTable(ctx: DumpCtx, pid: number, filesId: number, st: DumpState, own: readonly number[] = []): void {
  const entries: Msg<'fdinfo_entry'>[] = [];
  for (const fd of listFds(pid)) {
    if (own.includes(fd)) continue; // stasis's own (memory tracking): not the task's state
    const { id, type, flags } = dumpFd(ctx, pid, fd, st);
    entries.push({ id, flags: flags & O.CLOEXEC ? FDINFO_CLOEXEC : 0, type, fd });
  }
  ctx.write(`fdinfo-${filesId}.img`, 'FDINFO', parts('fdinfo_entry', entries));
}

/**
 * The file id of fd `fd` of `pid`: matched to its kind and dumped, or the id
 * of the same open file description seen before (behind another fd of this
 * or another process of the tree, or in flight in a socket's queue: then
 * `pid` is ours and the fd a copy the peek installed).
 */
export function dumpFd(ctx: DumpCtx, pid: number, fd: number, st = ctx.state(filesUnit), targetsOf?: number): { id: number; type: number; flags: number } {
  const link = fs.readlinkSync(`/proc/${pid}/fd/${fd}`);
  let fst: fs.Stats;
  try { fst = fs.statSync(`/proc/${pid}/fd/${fd}`); } catch (e) {
    throw new StasisError(ErrorCodes.UNSUPPORTED, `fd ${fd} (${link}) of pid ${pid}: cannot stat: ${(e as Error).message}`);
  }
  const info = readFdInfo(pid, fd);
  const d: FdDesc = { pid, fd, link, st: fst, info, flags: info.flags & ~O.CLOEXEC, targetsOf };
  const opath = (d.flags & O.PATH) !== 0;
  const unit = fileUnits.find((u) => (!opath || kindOf(u).opath) && kindOf(u).match(d));
  if (!unit) throw new StasisError(ErrorCodes.UNSUPPORTED, `fd ${fd} of pid ${pid}: ${opath ? 'O_PATH fd on ' : ''}${describeFd(fst, link)} is not supported yet`);
  const kind = kindOf(unit);
  // The same open file description behind two fds (of this or another process of the tree): one entry.
  const twin = st.seen.find((s) => s.dev === fst.dev && s.ino === fst.ino && kcmp(s.pid, pid, KCMP.FILE, s.fd, fd) === 0);
  const id = twin ? twin.id : fileId(ctx, `ofd:${pid}:${fd}`, (nid) => ({ type: kind.type, id: nid, [kind.field]: kind.dump(ctx, d, nid, ctx.state(unit)) }) as FileEntry);
  if (!twin) {
    st.seen.push({ pid, fd, dev: fst.dev, ino: fst.ino, id });
    const fown = st.owners.get(`${pid}:${fd}`);
    // Pushed last (entries its kind made on the way were pushed before it).
    const entry = st.entries[st.entries.length - 1].id === id ? st.entries[st.entries.length - 1] : st.entries.find((e) => e.id === id)!;
    const member = memberOf(entry) as { fown?: Fown } | undefined;
    if (fown && member) member.fown = fown;
  }
  return { id, type: kind.type, flags: info.flags };
}

/**
 * An fd table shared by several processes (clone(CLONE_FILES)) is one
 * fdinfo image, dumped with the first of them; stasis's own fds in any of
 * them are in it.
 */
function dumpSharedOnce(ctx: DumpCtx, pd: ProcessDump, st: DumpState): void {
  const sharers = ctx.processes.filter((p) => p.ids.files_id === pd.ids.files_id);
  if (sharers[0] !== pd) return;
  dumpFdTable(ctx, pd.pid, pd.ids.files_id, st, sharers.flatMap((p) => p.ownFds ?? []));
}

/** The process whose fd table `tr` shares (its parent, cloned with CLONE_FILES), if any. */
export function sharesFdTableOf(ctx: RestoreCtx | Loading, img: ProcessImage): number | undefined {
  const parent = ('ckpt' in ctx ? ctx.ckpt : ctx).processes.find((p) => p.pid === img.ppid);
  return parent && parent.ids.files_id === img.ids.files_id ? parent.pid : undefined;
}

/**
 * Who gets SIGIO (or the F_SETSIG signal) from each fd: the owner (a thread,
 * process or group, as the tree sees it: it must be of the tree) and the
 * credentials it was set with, which the kernel checks when it signals.
 */
/**
 * Each fd's owner (F_GETOWN_EX) and signal (F_GETSIG), declared: two calls
 * per fd in the units' batch (they were two stops per fd); the owner's
 * credentials (F_GETOWNER_UIDS) asked afterwards, only of fds that have one.
 */
function ownerCalls(ctx: DumpCtx, pd: ProcessDump, st: DumpState): ParasiteCalls {
  // An O_PATH fd has no file operations (fcntl F_GETSIG says EBADF), so no owner.
  const fds = listFds(pd.pid).filter((fd) => !(readFdInfo(pd.pid, fd).flags & O.PATH));
  const exs = fds.map(() => outBuf(F_OWNER_EX.size));
  return {
    calls: fds.flatMap((fd, i): RemoteCall[] => [['fcntl', fd, F.GETSIG, 0], ['fcntl', fd, F.GETOWN_EX, exs[i]]]),
    done(rs, t) {
      fds.forEach((fd, i) => {
        const [sig, own] = [rs[2 * i], rs[2 * i + 1]];
        for (const [r, what] of [[sig, 'F_GETSIG'], [own, 'F_GETOWN_EX']] as const) remoteResult(r, 'fcntl', `${what} of fd ${fd} in task ${t.pid}`);
        dumpOwner(ctx, pd, t, st, fd, Number(sig), F_OWNER_EX.decode(exs[i].data));
      });
    },
  };
}

function dumpOwner(ctx: DumpCtx, pd: ProcessDump, t: RemoteTask, st: DumpState, fd: number, signum: number, owner: { type: number; pid: number }): void {
  if (!owner.pid && !signum) return;
  if (owner.pid && !ownerInTree(ctx, owner.type, owner.pid)) {
    throw new StasisError(ErrorCodes.UNSUPPORTED, `fd ${fd} of pid ${pd.pid}: its owner (F_SETOWN) is ${['thread', 'process', 'process group'][owner.type] ?? 'type ' + owner.type} ${owner.pid}, outside the dumped tree; not supported`);
  }
  const uids = outBuf(8);
  const r = Number(t.callRaw('fcntl', fd, F.GETOWNER_UIDS, uids));
  if (r < 0) throw new StasisError(ErrorCodes.UNSUPPORTED, `fd ${fd} of pid ${pd.pid} has an owner (F_SETOWN), whose credentials this kernel does not show (F_GETOWNER_UIDS: errno ${-r}); not supported`);
  const [uid, euid] = abi.readI32s(uids.data, 2).map((x) => x >>> 0);
  st.owners.set(`${pd.pid}:${fd}`, { uid, euid, signum, pid_type: owner.type, pid: owner.pid });
}

function ownerInTree(ctx: DumpCtx, type: number, pid: number): boolean {
  return ctx.processes.some((p) => type === F_OWNER.PGRP ? p.vpgid === pid : type === F_OWNER.PID ? p.vpid === pid : [...p.vtids.values()].includes(pid));
}

/** Owners back (once every thread exists: one may be the owner), and O_ASYNC, which makes the kernel signal them. */
function restoreOwners(ctx: RestoreCtx, tr: TaskRestore, st: RestoreState): void {
  const t = tr.task;
  for (const [id, h] of st.holders) {
    if (h.pid !== tr.img.pid) continue;
    const m = memberOf(fileEntry(ctx, id)) as { flags?: number; fown?: Fown } | undefined;
    const fown = m?.fown;
    if (fown?.signum) t.call('fcntl', h.fd, F.SETSIG, fown.signum);
    if (fown?.pid) {
      // The kernel records the caller's real and effective uid with the owner.
      const [ruid, euid] = (readStatus(t.pid).get('Uid') ?? '0 0').split(/\s+/).map(Number);
      const sw = fown.uid !== ruid || fown.euid !== euid;
      if (sw) t.call('setresuid', fown.uid, fown.euid, -1);
      try {
        t.call('fcntl', h.fd, F.SETOWN_EX, inBuf(F_OWNER_EX.encode({ type: fown.pid_type, pid: fown.pid })));
      } finally {
        if (sw) t.call('setresuid', ruid, euid, -1);
      }
    }
    if ((m?.flags ?? 0) & O.ASYNC) t.call('fcntl', h.fd, F.SETFL, t.callNum('fcntl', h.fd, F.GETFL, 0) | O.ASYNC);
  }
}

/**
 * The file entry for `key` (an open file description, or a path and flags
 * for mappings, cwd...): made by `make` the first time, shared afterwards.
 */
export function fileId(ctx: DumpCtx, key: string, make: (id: number) => FileEntry): number {
  const st = ctx.state(filesUnit);
  const have = st.keys.get(key);
  if (have !== undefined) return have;
  // Taken before `make` runs: making an entry may make others (a FIFO's path...).
  const id = ++st.lastId;
  st.keys.set(key, id);
  const e = make(id);
  st.entries.push(e);
  return id;
}

/** The member entry of a file entry (reg, pipe, isk...), whatever its kind. */
export function memberOf(f: FileEntry): { id: number; flags?: number; pos?: bigint } | undefined {
  const u = fileUnitOfType(f.type);
  return u ? (f as Record<string, unknown>)[kindOf(u).field] as { id: number } | undefined : undefined;
}

function loadFiles(ld: Loading): Loaded {
  const file = ld.images.path('files.img');
  const files = new Map<number, FileEntry>();
  for (const f of ld.images.read('files.img', 'FILES', 'file_entry')) {
    if (files.has(f.id)) throw new StasisError(ErrorCodes.BAD_IMAGE, `${file}: duplicate file id ${f.id}`);
    const u = fileUnitOfType(f.type);
    const member = u ? (f as Record<string, unknown>)[kindOf(u).field] : undefined;
    if (!u || !member) throw new StasisError(ErrorCodes.BAD_IMAGE, `${file}: file id ${f.id}: unsupported file type ${FD_TYPE_NAMES[f.type] ?? f.type}`);
    kindOf(u).check?.(member, `${file}: file id ${f.id}`, ld);
    files.set(f.id, f);
  }
  const fdinfo = new Map<number, Msg<'fdinfo_entry'>[]>();
  const tables = new Set<number>();
  for (const p of ld.processes) {
    const name = `fdinfo-${p.ids.files_id}.img`;
    // A table shared (files_id) is so with the parent only: restore clones the child with CLONE_FILES.
    if (tables.has(p.ids.files_id) && sharesFdTableOf(ld, p) === undefined) {
      throw new StasisError(ErrorCodes.BAD_IMAGE, `${ld.images.path(`ids-${p.pid}.img`)}: pid ${p.pid} shares fd table ${p.ids.files_id} with a process other than its parent`);
    }
    tables.add(p.ids.files_id);
    const fds = ld.images.read(name, 'FDINFO', 'fdinfo_entry');
    const numbers = new Set<number>();
    for (const fd of fds) {
      const f = files.get(fd.id);
      if (!f) throw new StasisError(ErrorCodes.BAD_IMAGE, `${ld.images.path(name)}: fd ${fd.fd} names file id ${fd.id}, absent from files.img`);
      if (fd.type !== f.type) throw new StasisError(ErrorCodes.BAD_IMAGE, `${ld.images.path(name)}: fd ${fd.fd}: type ${FD_TYPE_NAMES[fd.type] ?? fd.type} but file id ${fd.id} is ${FD_TYPE_NAMES[f.type]}`);
      if (fd.fd > 0x7fffffff || numbers.has(fd.fd)) throw new StasisError(ErrorCodes.BAD_IMAGE, `${ld.images.path(name)}: fd ${fd.fd} is invalid or listed twice`);
      numbers.add(fd.fd);
    }
    fdinfo.set(p.pid, fds);
  }
  return { files, fdinfo };
}

/** A file entry of the checkpoint, by id (load has checked every reference). */
export function fileEntry(ctx: RestoreCtx | Loading, id: number): FileEntry {
  const l = ('ckpt' in ctx ? ctx.ckpt : ctx).loaded(filesUnit);
  const f = l.files.get(id);
  if (!f) throw new StasisError(ErrorCodes.BAD_IMAGE, `file id ${id} is absent from files.img`);
  return f;
}

/**
 * criu's inherit_fd key of a file the restorer may be handed in its place:
 * pipe:[INODE] (runc and podman hand over a container's stdio pipes so).
 */
export function inheritKey(f: FileEntry): string | undefined {
  return f.type === FD_TYPES.PIPE && f.pipe ? `pipe:[${f.pipe.pipe_id}]` : undefined;
}

/** Our fd N of the --inherit-fd fd[N]:KEY naming `key`, if any. */
export function inheritedFd(specs: readonly string[] | undefined, key: string | undefined): number | undefined {
  if (key === undefined) return undefined;
  for (const s of specs ?? []) {
    const m = /^fd\[(\d+)\]:(.+)$/.exec(s);
    if (m && m[2] === key) return Number(m[1]);
  }
  return undefined;
}

/** A new fd in the task for file `id` (sharing its open file description with every other holder). */
function materialize(ctx: RestoreCtx, tr: TaskRestore, id: number, st: RestoreState): number {
  const t = tr.task;
  const holder = st.holders.get(id);
  if (holder) return holder.pid === tr.img.pid ? t.callNum('dup', holder.fd) : fetchFd(t, holder.pid, holder.fd);
  const f = fileEntry(ctx, id);
  // One of ours given in its place (criu's --inherit-fd fd[N]:KEY): that very open file.
  const ours = inheritedFd(ctx.opts.inheritFd, inheritKey(f));
  if (ours !== undefined) return giveFd(t, ours);
  const u = fileUnitOfType(f.type)!;
  return kindOf(u).open(ctx, tr, (f as Record<string, unknown>)[kindOf(u).field], ctx.state(u), ctx.loaded(u));
}

/**
 * Put every fd back at its number. In ascending order every lower target is
 * taken already, so a new fd lands on its target or below it (then moved up
 * with dup3). Files shared with an earlier process are fetched from it with
 * pidfd_getfd, so they share one open file description (and offset) again.
 * Kinds with a finishing step (epoll: its targets) run it once all fds are in.
 */
function restoreFdTable(ctx: RestoreCtx, tr: TaskRestore, l: Loaded, st: RestoreState): void {
  const t = tr.task;
  const fds = [...(l.fdinfo.get(tr.img.pid) ?? [])].sort((a, b) => a.fd - b.fd);
  const created: { id: number; fd: number }[] = [];
  for (const fi of fds) {
    const cloexec = (fi.flags & FDINFO_CLOEXEC) !== 0;
    const fresh = !st.holders.has(fi.id);
    let fd = materialize(ctx, tr, fi.id, st);
    if (fd !== fi.fd) {
      t.call('dup3', fd, fi.fd, cloexec ? O.CLOEXEC : 0);
      t.call('close', fd);
      fd = fi.fd;
    } else {
      t.call('fcntl', fd, F.SETFD, cloexec ? abi.FD_CLOEXEC : 0);
    }
    if (fresh) {
      st.holders.set(fi.id, { pid: tr.img.pid, fd });
      created.push({ id: fi.id, fd });
    }
  }
  for (const c of [...created, ...st.late.filter((x) => x.pid === tr.img.pid)]) {
    const f = l.files.get(c.id)!;
    const u = fileUnitOfType(f.type)!;
    kindOf(u).finish?.(ctx, tr, (f as Record<string, unknown>)[kindOf(u).field], c.fd, ctx.state(u));
  }
}

/**
 * An fd of the task for file `id`, parked above its fd table (closed in
 * files-cleanup): for a file that no fd of it may hold (in flight in a
 * socket's queue). Made the first time (its holder from then on), else
 * shared with the holder.
 */
export function holdFile(ctx: RestoreCtx, tr: TaskRestore, id: number): number {
  const st = ctx.state(filesUnit);
  const h = st.holders.get(id);
  if (h && h.pid === tr.img.pid) return h.fd;
  const fd = park(ctx, tr, materialize(ctx, tr, id, st));
  if (!h) {
    st.holders.set(id, { pid: tr.img.pid, fd });
    st.late.push({ pid: tr.img.pid, id, fd });
  }
  return fd;
}

/** Copy fd `fd` of process `from` into the task (same open file description). */
export function fetchFd(t: RemoteTask, from: number, fd: number): number {
  const pidfd = t.callNum('pidfd_open', from, 0);
  try {
    return t.callNum('pidfd_getfd', pidfd, fd, 0);
  } finally {
    t.call('close', pidfd);
  }
}

/**
 * Park an fd above every fd number the task will use (closed once every
 * process has its fds, in files-cleanup); returns the new number.
 */
export function park(ctx: RestoreCtx, tr: TaskRestore, fd: number): number {
  const above = (ctx.loaded(filesUnit).fdinfo.get(tr.img.pid) ?? []).reduce((m, f) => Math.max(m, f.fd), 2) + 1;
  const parked = tr.task.callNum('fcntl', fd, F.DUPFD_CLOEXEC, above);
  tr.task.call('close', fd);
  ctx.state(filesUnit).parked.push({ pid: tr.img.pid, fd: parked });
  return parked;
}

/** The fd table and the table of files. */
export const filesUnit = defineUnit<DumpState, Loaded, RestoreState>({
  name: 'files',
  dumpState: () => ({ entries: [], keys: new Map(), lastId: 0, seen: [], owners: new Map() }),
  parasiteCalls: ownerCalls,
  dumpPhases: [
    { name: 'files', after: ['parasite'], each: (ctx, pd, st) => dumpSharedOnce(ctx, pd, st) },
    // Everything that names file entries (mappings, cwd, sockets' peers...) comes before.
    { name: 'write-files', after: ['files'], once: (ctx, st) => ctx.write('files.img', 'FILES', parts('file_entry', [...st.entries].sort((a, b) => a.id - b.id))) },
  ],
  load: loadFiles,
  validate(ld, l) {
    for (const [pid, fds] of l.fdinfo) {
      for (const fd of fds) {
        const f = l.files.get(fd.id)!;
        const u = fileUnitOfType(f.type)!;
        kindOf(u).validate?.((f as Record<string, unknown>)[kindOf(u).field], `${ld.images.path('files.img')}: fd ${fd.fd} of pid ${pid}`, ld, ld.loaded(u));
      }
    }
  },
  restoreState: () => ({ holders: new Map(), parked: [], late: [] }),
  restorePhases: [
    // The task came from the stub: drop the fds it inherited, before any of ours exist.
    // A table shared with the parent is the parent's: emptied and filled there.
    { name: 'close-inherited', each: (ctx, tr) => { if (sharesFdTableOf(ctx, tr.img) === undefined) tr.task.call('close_range', 0, 0xffffffff, 0); } },
    // close_range() here must not close fds the mapping phases still use;
    // paths open relative to the restored cwd/root.
    { name: 'files', after: ['close-inherited', 'address-space', 'mm', 'fs'], each: (ctx, tr, l, st) => { if (sharesFdTableOf(ctx, tr.img) === undefined) restoreFdTable(ctx, tr, l, st); } },
    { name: 'fd-owners', after: ['files', 'threads'], each: (ctx, tr, _l, st) => restoreOwners(ctx, tr, st) },
    // Fds parked in their creator go once every process has its fds.
    {
      name: 'files-cleanup', after: ['files'],
      each: (_ctx, tr, _l, st) => { for (const p of st.parked) if (p.pid === tr.img.pid) tr.task.call('close', p.fd); },
    },
  ],
});
