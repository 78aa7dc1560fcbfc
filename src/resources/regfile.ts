// Regular files and directories (and character devices that carry no state,
// such as /dev/null, re-opened by path): reg_file_entry in files.img. Used by
// open fds, file mappings, the exe link, cwd and root.
//
// A file deleted while open (a "ghost") has its contents put in
// ghost-file-N.img (up to the ghost limit) and remap-fpath.img maps its file
// id to it; restore re-creates it, opens it for every user, and unlinks it
// again. A deleted directory (an open one, or a cwd) is a ghost too: always
// empty, so made again exactly, then removed.
import * as fs from 'node:fs';
import { abi, sys, sysTry, addressOf } from '../sys';

const { SEEK } = abi;
import { parts, ImageCursor, type Msg } from '../images/image';
import { FD_TYPES, NO_FOWN, REMAP } from '../images/criu';
import { StasisError, ErrorCodes } from '../errors';
import { defineFileUnit, type FdDesc } from '../unit/unit';
import type { DumpCtx } from '../unit/dump-ctx';
import type { RestoreCtx } from '../unit/restore-ctx';
import { fileId, filesUnit } from './files';
import { namespacesUnit } from './ns/namespaces';
import { treeMounts } from './ns/mnt';
import { treeProcFile, checkTreeProcFile } from './procfiles';

const { O, S_IF } = abi;
type RegEntry = Msg<'reg_file_entry'>;

/** Default --ghost-limit, as criu's. */
export const GHOST_LIMIT = 1 << 20;

/** A ghost's contents: whole, or (a sparse file) its data extents only, as criu's chunks. */
/** `alias`: another open file description of a ghost already kept (same inode): a remap entry only. */
interface Ghost { origId: number; remapId: number; entry: Msg<'ghost_file_entry'>; data: Buffer; chunks?: { off: number; data: Buffer }[]; alias?: boolean }

/**
 * The file entry for `path` opened with `flags`, shared by every user of the
 * same key (default: the path and flags, as for mappings and cwd).
 */
export function regFileEntry(ctx: DumpCtx, path: string, flags: number, opts: { key?: string; pos?: bigint; statPath?: string } = {}): number {
  const key = opts.key ?? `path:${flags}:${path}`;
  return fileId(ctx, key, (id) => ({ type: FD_TYPES.REG, id, reg: regEntry(id, path, flags, opts.pos ?? 0n, opts.statPath ?? path) }));
}

function regEntry(id: number, path: string, flags: number, pos: bigint, statPath: string): RegEntry {
  let st: fs.Stats | undefined;
  try { st = fs.statSync(statPath); } catch { /* checked on restore */ }
  return {
    id, flags, pos, fown: NO_FOWN, name: path,
    ...(st ? { size: BigInt(st.isFile() ? st.size : 0), mode: st.mode } : {}),
  };
}

/** Character devices that carry no state and are safe to re-open by path. */
const HARMLESS_CHR = new Set(['/dev/null', '/dev/zero', '/dev/full', '/dev/random', '/dev/urandom']);

/** A file that must still be there, with the size it had. */
export function checkRegFile(e: RegEntry, where: string, skipFileCheck: boolean): void {
  let st: fs.Stats;
  try { st = fs.statSync(e.name); } catch {
    throw new StasisError(ErrorCodes.FILE_CHANGED, `${where}: file ${e.name} no longer exists`);
  }
  if (!skipFileCheck && e.size !== undefined && st.isFile() && BigInt(st.size) !== e.size) {
    throw new StasisError(ErrorCodes.FILE_CHANGED, `${where}: file ${e.name} changed size since the dump (${e.size} → ${st.size} bytes); --skip-file-check restores anyway`);
  }
}

function timeval(ms: number): Msg<'timeval'> {
  const us = BigInt(Math.round(ms * 1000));
  return { tv_sec: us / 1000000n, tv_usec: us % 1000000n };
}
const seconds = (t: Msg<'timeval'>): number => Number(t.tv_sec) + Number(t.tv_usec) / 1e6;

/** A deleted file's contents; with holes (SEEK_HOLE finds one before the end), its data extents alone. */
function readGhost(via: string, size: number): { data: Buffer; chunks?: { off: number; data: Buffer }[] } {
  const fd = fs.openSync(via, 'r');
  try {
    const read = (off: number, len: number): Buffer => {
      const b = Buffer.alloc(len);
      for (let got = 0; got < len;) {
        const n = fs.readSync(fd, b, got, len - got, off + got);
        if (n <= 0) throw new StasisError(ErrorCodes.FILE_CHANGED, `${via}: deleted file shrank while being read`);
        got += n;
      }
      return b;
    };
    const firstHole = sysTry('lseek', fd, 0, SEEK.HOLE);
    if (firstHole < 0 || firstHole >= size) return { data: read(0, size) };
    const chunks: { off: number; data: Buffer }[] = [];
    for (let off = 0; off < size;) {
      const start = sysTry('lseek', fd, off, SEEK.DATA);
      if (start < 0 || start >= size) break; // ENXIO: only a hole left
      const end = Math.min(size, Math.max(sysTry('lseek', fd, start, SEEK.HOLE), start));
      chunks.push({ off: start, data: read(start, end - start) });
      off = end;
    }
    return { data: Buffer.alloc(0), chunks };
  } finally {
    fs.closeSync(fd);
  }
}

const DELETED = ' (deleted)';
const isDir = (mode: number | undefined): boolean => ((mode ?? 0) & S_IF.MT) === S_IF.DIR;
const isFifo = (mode: number | undefined): boolean => ((mode ?? 0) & S_IF.MT) === S_IF.FIFO;

/**
 * A deleted file or directory `link` ("… (deleted)"), reached through `via`
 * (/proc/PID/fd/N or /proc/PID/cwd), as a ghost; `what` names its user.
 */
function dumpGhost(ctx: DumpCtx, g: { link: string; via: string; st: fs.Stats; flags: number; pos: bigint; what: string }, id: number, ghosts: Ghost[]): RegEntry {
  const name = g.link.slice(0, -DELETED.length);
  const { st } = g;
  // Still linked elsewhere (the path it was opened by was removed, another
  // hard link remains): a copy would be another file than that one.
  if (st.nlink > 0 && !st.isDirectory()) {
    throw new StasisError(ErrorCodes.UNSUPPORTED, `${g.what}: ${g.link} still has ${st.nlink} hard link(s) under other names; not supported`);
  }
  // One inode, however many open file descriptions: one ghost file, re-made once.
  const same = ghosts.find((x) => !x.alias && x.entry.dev === st.dev && x.entry.ino === BigInt(st.ino));
  if (same) {
    ghosts.push({ ...same, origId: id, alias: true });
    return regEntry(id, name, g.flags, g.pos, g.via);
  }
  // Made again where it was: a directory it was in, removed too, is not made for it.
  const parent = name.slice(0, name.lastIndexOf('/')) || '/';
  // Seen from the task's root (its mount namespace may be its own).
  const taskRoot = g.via.replace(/\/(fd\/\d+|cwd|root)$/, '/root');
  if (!fs.existsSync(taskRoot + parent)) throw new StasisError(ErrorCodes.UNSUPPORTED, `${g.what}: ${g.link} was in ${parent}, removed too; not supported`);
  // A directory of /proc, sysfs, a cgroup...: a kernel object, not something mkdir makes again.
  if (st.isDirectory() && abi.KERNEL_OBJECT_FS_MAGICS.includes(fs.statfsSync(g.via).type)) {
    throw new StasisError(ErrorCodes.UNSUPPORTED, `${g.what}: ${g.link} is a removed directory of a kernel filesystem (/proc of an ended process, a removed cgroup...); not supported`);
  }
  const limit = ctx.opts.ghostLimit ?? GHOST_LIMIT;
  if (st.size > limit && !st.isDirectory()) {
    throw new StasisError(ErrorCodes.UNSUPPORTED, `${g.what}: deleted file ${g.link} holds ${st.size} bytes, over the ghost limit of ${limit} (--ghost-limit)`);
  }
  // A deleted directory is empty, a FIFO's queue is the fifo unit's: nothing but the inode's attributes.
  const bare = st.isDirectory() || st.isFIFO();
  const { data, chunks } = bare ? { data: Buffer.alloc(0), chunks: undefined } : readGhost(g.via, st.size);
  ghosts.push({
    origId: id, remapId: ghosts.filter((x) => !x.alias).length + 1, data, chunks,
    entry: {
      uid: st.uid, gid: st.gid, mode: st.mode, dev: st.dev, ino: BigInt(st.ino), chunks: chunks !== undefined,
      ...(bare ? {} : { size: BigInt(st.size) }),
      atim: timeval(st.atimeMs), mtim: timeval(st.mtimeMs),
    },
  });
  return regEntry(id, name, g.flags, g.pos, g.via);
}

/**
 * The file id of a directory a process is in (cwd or root, `link` as
 * /proc/PID/`which` reads), a ghost when it was deleted.
 */
export function dirEntry(ctx: DumpCtx, pid: number, which: 'cwd' | 'root'): number {
  const link = fs.readlinkSync(`/proc/${pid}/${which}`);
  const via = `/proc/${pid}/${which}`;
  const flags = O.RDONLY | O.DIRECTORY;
  if (!link.endsWith(DELETED)) return regFileEntry(ctx, link, flags, { statPath: via });
  const st = fs.statSync(via);
  return fileId(ctx, `ghost-dir:${st.dev}:${st.ino}`, (id) => ({
    type: FD_TYPES.REG, id, reg: dumpGhost(ctx, { link, via, st, flags, pos: 0n, what: `the ${which} of pid ${pid}` }, id, ctx.state(regFileUnit).ghosts),
  }));
}

/** The file id of a deleted FIFO's path (fd `d`, opened with its flags), as a ghost. */
export function ghostFifoEntry(ctx: DumpCtx, d: FdDesc): number {
  return fileId(ctx, `ghost-fifo:${d.flags}:${d.st.dev}:${d.st.ino}`, (id) => ({
    type: FD_TYPES.REG, id, reg: dumpGhost(ctx, { link: d.link, via: `/proc/${d.pid}/fd/${d.fd}`, st: d.st, flags: d.flags, pos: 0n, what: `fd ${d.fd} of pid ${d.pid}` }, id, ctx.state(regFileUnit).ghosts),
  }));
}

/** The path a ghost file or directory was made again at (made now if not yet), for file id `id`; undefined for other files. */
export function ghostFor(ctx: RestoreCtx, e: RegEntry): string | undefined {
  const ghost = ctx.loaded(regFileUnit).ghosts.get(e.id);
  return ghost === undefined ? undefined : ghostPath(ctx, e, ghost, ctx.state(regFileUnit).made);
}

/**
 * Re-create a ghost file once (at its old path when that is free, else beside
 * it) for every opener; cleanup unlinks it again.
 */
function ghostPath(ctx: RestoreCtx, e: RegEntry, ghostId: number, made: Map<number, string>): string {
  const have = made.get(ghostId);
  if (have) return have;
  const file = `ghost-file-${ghostId}.img`;
  const cur = new ImageCursor(ctx.ckpt.images.path(file), ctx.ckpt.images.raw(file), 'GHOST_FILE');
  if (cur.done) throw new StasisError(ErrorCodes.BAD_IMAGE, `${ctx.ckpt.images.path(file)}: empty`);
  const entry = cur.entry('ghost_file_entry');
  if (isDir(entry.mode) || isFifo(entry.mode)) return ghostNode(ctx, e, entry, ghostId, made);
  // Whole contents after the entry, or chunks (an entry, then its bytes) of a sparse file.
  const chunks: { off: number; data: Buffer }[] = [];
  if (!entry.chunks) chunks.push({ off: 0, data: cur.bytes(cur.rest) });
  else {
    while (!cur.done) {
      const c = cur.entry('ghost_chunk_entry');
      if (c.off + c.len > (entry.size ?? 0n)) throw new StasisError(ErrorCodes.BAD_IMAGE, `${ctx.ckpt.images.path(file)}: chunk at ${c.off} (${c.len} bytes) past the file's size ${entry.size}`);
      chunks.push({ off: Number(c.off), data: cur.bytes(Number(c.len)) });
    }
  }
  const g = { entry };
  const path = freePath(ctx, e, ghostId);
  const fd = fs.openSync(path, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, g.entry.mode & 0o7777);
  made.set(ghostId, path);
  try {
    for (const c of chunks) fs.writeSync(fd, c.data, 0, c.data.length, c.off);
    if (entry.size !== undefined) fs.ftruncateSync(fd, Number(entry.size));
    fs.fchownSync(fd, g.entry.uid, g.entry.gid);
    fs.fchmodSync(fd, g.entry.mode & 0o7777);
    // Last: writing moved them. Microseconds, as the image holds them.
    if (g.entry.mtim) fs.futimesSync(fd, seconds(g.entry.atim ?? g.entry.mtim), seconds(g.entry.mtim));
  } finally {
    fs.closeSync(fd);
  }
  return path;
}

/** Where a ghost is made: its old path when free (in the tree's own mount namespace when it has one), else beside it. */
function freePath(ctx: RestoreCtx, e: RegEntry, ghostId: number): string {
  const path = ctx.fsRoot + e.name;
  return fs.existsSync(path) ? `${path}.stasis-ghost-${process.pid}-${ghostId}` : path;
}

/** A deleted directory (empty, as it was) or FIFO made again, with its owner, mode and times. */
function ghostNode(ctx: RestoreCtx, e: RegEntry, entry: Msg<'ghost_file_entry'>, ghostId: number, made: Map<number, string>): string {
  const path = freePath(ctx, e, ghostId);
  if (isDir(entry.mode)) fs.mkdirSync(path, entry.mode & 0o7777);
  else sys('mknodat', abi.AT_FDCWD, addressOf(Buffer.from(`${path}\0`)), S_IF.FIFO | (entry.mode & 0o7777), 0);
  made.set(ghostId, path);
  fs.chownSync(path, entry.uid, entry.gid);
  fs.chmodSync(path, entry.mode & 0o7777);
  if (entry.mtim) fs.utimesSync(path, seconds(entry.atim ?? entry.mtim), seconds(entry.mtim));
  return path;
}

/**
 * Ghosts made again are removed (`dirsOnly`: the directories). A directory
 * with rmdir: only if empty, as it was made, so nothing of anyone else's
 * goes with it.
 */
function removeGhosts(made: Map<number, string>, dirsOnly: boolean): void {
  for (const [id, p] of made) {
    let dir: boolean;
    try { dir = fs.lstatSync(p).isDirectory(); } catch { made.delete(id); continue; }
    if (dir) fs.rmdirSync(p);
    else if (dirsOnly) continue;
    else fs.rmSync(p, { force: true });
    made.delete(id);
  }
}

/** Whether a file is on the mqueue filesystem (POSIX message queues). */
function isMqueue(file: string): boolean {
  try { return fs.statfsSync(file).type === abi.MQUEUE_MAGIC; } catch { return false; }
}

/** Whether `link`, resolved in pid's mount namespace and root, is the file `st`. */
function sameFileInside(pid: number, link: string, st: fs.Stats): boolean {
  try {
    const inside = fs.statSync(`/proc/${pid}/root${link}`);
    return inside.dev === st.dev && inside.ino === st.ino;
  } catch { return false; }
}

export const regFileUnit = defineFileUnit({
  name: 'regular files',
  dumpState: () => ({ ghosts: [] as Ghost[] }),
  dumpPhases: [{
    name: 'ghost-files', after: ['files'], before: ['write-files'],
    once(ctx, st) {
      for (const g of st.ghosts) {
        if (g.alias) continue;
        ctx.write(`ghost-file-${g.remapId}.img`, 'GHOST_FILE', g.chunks
          ? [{ msg: 'ghost_file_entry', entry: g.entry }, ...g.chunks.map((c) => ({ msg: 'ghost_chunk_entry' as const, entry: { len: BigInt(c.data.length), off: BigInt(c.off) }, payload: c.data }))]
          : [{ msg: 'ghost_file_entry', entry: g.entry, payload: g.data }]);
      }
      ctx.write('remap-fpath.img', 'REMAP_FPATH', parts('remap_file_path_entry', st.ghosts.map((g) => ({ orig_id: g.origId, remap_id: g.remapId, remap_type: REMAP.GHOST }))));
    },
  }],
  loadAfter: ['files', 'namespaces'],
  /** Ghost files: file id → ghost image id. */
  load(ld) {
    const ghosts = new Map<number, number>();
    if (!ld.images.exists('remap-fpath.img')) return { ghosts };
    const where = ld.images.path('remap-fpath.img');
    const { files } = ld.loaded(filesUnit);
    for (const r of ld.images.read('remap-fpath.img', 'REMAP_FPATH', 'remap_file_path_entry')) {
      if (!files.get(r.orig_id)?.reg) throw new StasisError(ErrorCodes.BAD_IMAGE, `${where}: remaps file id ${r.orig_id}, not a regular file of files.img`);
      if ((r.remap_type ?? REMAP.LINKED) !== REMAP.GHOST) throw new StasisError(ErrorCodes.BAD_IMAGE, `${where}: file id ${r.orig_id}: remap type ${r.remap_type} is not supported`);
      if (!ld.images.exists(`ghost-file-${r.remap_id}.img`)) throw new StasisError(ErrorCodes.BAD_IMAGE, `${ld.images.path(`ghost-file-${r.remap_id}.img`)}: missing`);
      ghosts.set(r.orig_id, r.remap_id);
    }
    return { ghosts };
  },
  restoreState: () => ({ made: new Map<number, string>() }),
  // Ghost directories go before anything runs: a process let run could make a file in one, and it would stay.
  restorePhases: [{ name: 'ghost-dirs-gone', after: ['fs', 'files'], once: (_ctx, _l, st) => removeGhosts(st.made, true) }],
  // Re-created deleted files are deleted again, success or not.
  cleanup(_ctx, st) { removeGhosts(st.made, false); },
  file: {
    type: FD_TYPES.REG,
    field: 'reg',
    match: (d) => !d.link.startsWith('/memfd:') && !d.link.startsWith('anon_inode:') && (d.st.isFile() || d.st.isDirectory() || (d.st.isCharacterDevice() && HARMLESS_CHR.has(d.link))),
    dump(ctx, d, id, st) {
      // A file of /proc naming a process of the tree (a namespace fd too): re-opened by path.
      const proc = treeProcFile(ctx, d);
      if (proc) return regEntry(id, proc, d.flags, d.info.pos, `/proc/${d.pid}/fd/${d.fd}`);
      // Its inode is a regular file, on the mqueue filesystem: nothing a path re-opens.
      if (d.st.isFile() && isMqueue(`/proc/${d.pid}/fd/${d.fd}`)) throw new StasisError(ErrorCodes.UNSUPPORTED, `fd ${d.fd} of pid ${d.pid}: ${d.link} is a POSIX message queue; not supported`);
      // Its path is re-opened in the tree's mount namespace: a file on a mount
      // outside it (a container's stdout on a host file) would be another file.
      // One inherited from outside (a log opened before unshare) is fine when
      // its path there still names the very same file.
      const own = treeMounts(ctx);
      if (own && !own.has(d.info.mntId) && !(d.st.isCharacterDevice() && HARMLESS_CHR.has(d.link)) && !sameFileInside(d.pid, d.link, d.st)) {
        throw new StasisError(ErrorCodes.UNSUPPORTED, `fd ${d.fd} of pid ${d.pid}: ${d.link} is on a mount outside the tree's mount namespace (mount ${d.info.mntId}); not supported`);
      }
      if (d.link.endsWith(DELETED) && (d.st.isFile() || d.st.isDirectory())) {
        return dumpGhost(ctx, { link: d.link, via: `/proc/${d.pid}/fd/${d.fd}`, st: d.st, flags: d.flags, pos: d.info.pos, what: `fd ${d.fd} of pid ${d.pid}` }, id, st.ghosts);
      }
      if (d.link.endsWith(DELETED)) throw new StasisError(ErrorCodes.UNSUPPORTED, `fd ${d.fd} of pid ${d.pid}: ${d.link} is deleted and not a regular file; not supported`);
      return regEntry(id, d.link, d.flags, d.info.pos, `/proc/${d.pid}/fd/${d.fd}`);
    },
    validate(e, where, ld, l) {
      if (l.ghosts.has(e.id) || checkTreeProcFile(e.name, where, ld.processes)) return;
      // Paths in a mount namespace of the tree's own are checked once it exists (open).
      if (!ld.loaded(namespacesUnit).has('mnt')) checkRegFile(e, where, ld.opts.skipFileCheck ?? false);
    },
    open(ctx, tr, e, st, l) {
      let flags = e.flags & ~(O.CREAT | O.EXCL | O.TRUNC | O.NOCTTY);
      // Opened with O_TMPFILE (its flags keep O_DIRECTORY with it): the file made again is opened as a file.
      if (flags & O.TMPFILE_BIT) flags &= ~(O.TMPFILE_BIT | O.DIRECTORY);
      const ghost = l.ghosts.get(e.id);
      const fd = tr.task.open(ghost !== undefined ? ghostPath(ctx, e, ghost, st.made).slice(ctx.fsRoot.length) : e.name, flags);
      // With a mount namespace of its own the file could not be checked before: now, through the task's fd.
      if (ctx.fsRoot && ghost === undefined) checkRegFile({ ...e, name: `/proc/${tr.task.pid}/fd/${fd}` }, `fd of ${e.name}`, ctx.opts.skipFileCheck ?? false);
      // Not at 0 only: some files cannot seek (a namespace fd says ESPIPE).
      if (e.pos) tr.task.call('lseek', fd, e.pos, abi.SEEK.SET);
      return fd;
    },
    describe: (e) => e.name,
  },
});

