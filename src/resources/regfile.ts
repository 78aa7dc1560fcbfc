// Regular files and directories (and character devices that carry no state,
// such as /dev/null, re-opened by path): reg_file_entry in files.img. Used by
// open fds, file mappings, the exe link, cwd and root.
//
// A file deleted while in use (a "ghost": ghost.ts) has its own image
// ghost-file-N.img, and remap-fpath.img maps its file ids to it; restore
// makes it again, opens or maps it for every user, and removes it again.
// O_PATH fds (a path only, a symlink itself with O_NOFOLLOW) are opened again
// the same way: nothing is opened through them.
import * as fs from 'node:fs';
import { abi } from '../sys';
import { parts, type Msg } from '../images/image';
import { FD_TYPES, NO_FOWN, REMAP } from '../images/criu';
import { StasisError, ErrorCodes } from '../errors';
import { defineFileUnit, type FdDesc } from '../unit/unit';
import type { DumpCtx } from '../unit/dump-ctx';
import type { RestoreCtx } from '../unit/restore-ctx';
import type { Loading } from '../unit/checkpoint';
import { fileId, filesUnit } from './files';
import { namespacesUnit } from './ns/namespaces';
import { treeMounts } from './ns/mnt';
import { treeProcFile, checkTreeProcFile } from './procfiles';
import { ttyKind } from './tty/device';
import { dumpGhost, writeGhost, makeGhost, removeGhosts, otherLink, type Ghost } from './ghost';

const { O } = abi;
type RegEntry = Msg<'reg_file_entry'>;

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
  // O_NOFOLLOW (an O_PATH fd on a symlink): the link itself, which may point nowhere.
  try { st = e.flags & O.NOFOLLOW ? fs.lstatSync(e.name) : fs.statSync(e.name); } catch {
    throw new StasisError(ErrorCodes.FILE_CHANGED, `${where}: file ${e.name} no longer exists`);
  }
  if (!skipFileCheck && e.size !== undefined && st.isFile() && BigInt(st.size) !== e.size) {
    throw new StasisError(ErrorCodes.FILE_CHANGED, `${where}: file ${e.name} changed size since the dump (${e.size} → ${st.size} bytes); --skip-file-check restores anyway`);
  }
}

const DELETED = ' (deleted)';

/**
 * A deleted file, directory, FIFO, symlink or device node `link` ("…
 * (deleted)"), reached through `via` (/proc/PID/fd/N, /proc/PID/cwd,
 * /proc/PID/map_files/A-B), as a ghost; `what` names its user.
 */
function ghostEntry(ctx: DumpCtx, g: { link: string; via: string; st: fs.Stats; flags: number; pos: bigint; what: string }, id: number): RegEntry {
  const name = g.link.endsWith(DELETED) ? g.link.slice(0, -DELETED.length) : g.link;
  const u = { name, via: g.via, st: g.st, what: g.what, opath: (g.flags & O.PATH) !== 0 };
  // Removed under this name, linked under another beside it: opened again
  // by that name, the same inode (its /proc/PID/fd link then reads that name).
  const other = otherLink(u);
  if (other !== undefined) return regEntry(id, other, g.flags, g.pos, g.via);
  dumpGhost(ctx, u, id, ctx.state(regFileUnit).ghosts, HARMLESS_CHR);
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
    type: FD_TYPES.REG, id, reg: ghostEntry(ctx, { link, via, st, flags, pos: 0n, what: `the ${which} of pid ${pid}` }, id),
  }));
}

/** The file id of a deleted FIFO's path (fd `d`, opened with its flags), as a ghost. */
export function ghostFifoEntry(ctx: DumpCtx, d: FdDesc): number {
  return fileId(ctx, `ghost-fifo:${d.flags}:${d.st.dev}:${d.st.ino}`, (id) => ({
    type: FD_TYPES.REG, id, reg: ghostEntry(ctx, { link: d.link, via: `/proc/${d.pid}/fd/${d.fd}`, st: d.st, flags: d.flags, pos: 0n, what: `fd ${d.fd} of pid ${d.pid}` }, id),
  }));
}

/**
 * The file id of a mapping of a deleted file (`via`: its map_files link),
 * opened with `flags`: its ghost, the same as an fd's on that inode.
 */
export function mappedGhostEntry(ctx: DumpCtx, name: string, via: string, flags: number): number {
  const st = fs.statSync(via);
  const what = `the mapping ${via.slice(via.lastIndexOf('/') + 1)} of pid ${via.split('/')[2]}`;
  // Shared anonymous huge pages show as a deleted hugetlbfs file ("/anon_hugepage"): not a file read() can copy.
  if (!st.isFile() || fs.statfsSync(via).type === abi.HUGETLBFS_MAGIC) {
    throw new StasisError(ErrorCodes.UNSUPPORTED, `${what}: ${name} (deleted) is ${st.isFile() ? 'huge-page memory (hugetlbfs)' : 'not a regular file'}; not supported`);
  }
  return fileId(ctx, `ghost-map:${flags}:${st.dev}:${st.ino}`, (id) => ({
    type: FD_TYPES.REG, id, reg: ghostEntry(ctx, { link: name, via, st, flags, pos: 0n, what }, id),
  }));
}

/** The path a ghost file or directory was made again at (made now if not yet), for file id `id`; undefined for other files. */
export function ghostFor(ctx: RestoreCtx, e: RegEntry): string | undefined {
  const ghost = ctx.loaded(regFileUnit).ghosts.get(e.id);
  return ghost === undefined ? undefined : ghostPath(ctx, e, ghost, ctx.state(regFileUnit).made);
}

/** Where a task opens (or maps) file `e`: its ghost if it is one (made now if not yet), else its path. */
export function taskPath(ctx: RestoreCtx, e: RegEntry): string {
  const ghost = ghostFor(ctx, e);
  return ghost === undefined ? e.name : ghost.slice(ctx.fsRoot.length);
}

/** Whether file id `id` of the checkpoint is a ghost. */
export const isGhost = (ld: Loading, id: number): boolean => ld.loaded(regFileUnit).ghosts.has(id);

/**
 * Re-create a ghost once (at its old path when that is free, else beside
 * it) for every opener; cleanup removes it again.
 */
function ghostPath(ctx: RestoreCtx, e: RegEntry, ghostId: number, made: Map<number, string>): string {
  const have = made.get(ghostId);
  if (have) return have;
  // Its old path when free (in the tree's own mount namespace when it has one), else beside it.
  const old = ctx.fsRoot + e.name;
  const path = fs.existsSync(old) || isLink(old) ? `${old}.stasis-ghost-${process.pid}-${ghostId}` : old;
  makeGhost(ctx, ghostId, path, made);
  return path;
}

function isLink(p: string): boolean {
  try { return fs.lstatSync(p).isSymbolicLink(); } catch { return false; }
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

/** fds this kind carries: files, directories, stateless devices; any path held with O_PATH; deleted device nodes (refused unless stateless). */
function matches(d: FdDesc): boolean {
  if (d.link.startsWith('/memfd:') || d.link.startsWith('anon_inode:')) return false;
  if (d.flags & O.PATH) return d.link.startsWith('/');
  // A terminal's node, deleted or not, is the terminal's (tty/).
  const dev = d.st.isBlockDevice() || (d.st.isCharacterDevice() && ttyKind(d.st.rdev).kind === 'other');
  return d.st.isFile() || d.st.isDirectory() || (d.st.isCharacterDevice() && HARMLESS_CHR.has(d.link)) || (dev && d.link.endsWith(DELETED));
}

function dumpReg(ctx: DumpCtx, d: FdDesc, id: number): RegEntry {
  const via = `/proc/${d.pid}/fd/${d.fd}`;
  // A file of /proc naming a process of the tree (a namespace fd too): re-opened by path.
  const proc = treeProcFile(ctx, d);
  if (proc) return regEntry(id, proc, d.flags, d.info.pos, via);
  // Its inode is a regular file, on the mqueue filesystem: nothing a path re-opens.
  if (d.st.isFile() && isMqueue(via)) throw new StasisError(ErrorCodes.UNSUPPORTED, `fd ${d.fd} of pid ${d.pid}: ${d.link} is a POSIX message queue; not supported`);
  // Its path is re-opened in the tree's mount namespace: a file on a mount
  // outside it (a container's stdout on a host file) would be another file.
  // One inherited from outside (a log opened before unshare) is fine when
  // its path there still names the very same file.
  const own = treeMounts(ctx);
  if (own && !own.has(d.info.mntId) && !(d.st.isCharacterDevice() && HARMLESS_CHR.has(d.link)) && !sameFileInside(d.pid, d.link, d.st)) {
    throw new StasisError(ErrorCodes.UNSUPPORTED, `fd ${d.fd} of pid ${d.pid}: ${d.link} is on a mount outside the tree's mount namespace (mount ${d.info.mntId}); not supported`);
  }
  if (d.link.endsWith(DELETED)) return ghostEntry(ctx, { link: d.link, via, st: d.st, flags: d.flags, pos: d.info.pos, what: `fd ${d.fd} of pid ${d.pid}` }, id);
  return regEntry(id, d.link, d.flags, d.info.pos, via);
}

export const regFileUnit = defineFileUnit({
  name: 'regular files',
  dumpState: () => ({ ghosts: [] as Ghost[] }),
  dumpPhases: [{
    // After memory: mappings of deleted files are ghosts too.
    name: 'ghost-files', after: ['files', 'memory'], before: ['write-files'],
    once(ctx, st) {
      for (const g of st.ghosts) if (!g.alias) writeGhost(ctx, g);
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
    // The only kind that carries O_PATH fds (files.ts): whatever the inode, only its path is kept.
    opath: true,
    match: matches,
    dump: (ctx, d, id) => dumpReg(ctx, d, id),
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
      // Not at 0 only: some files cannot seek (a namespace fd says ESPIPE; an O_PATH fd, EBADF).
      if (e.pos && !(e.flags & O.PATH)) tr.task.call('lseek', fd, e.pos, abi.SEEK.SET);
      return fd;
    },
    describe: (e) => e.name,
  },
});
