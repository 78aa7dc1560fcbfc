// Regular files (and character devices that carry no state, such as
// /dev/null, re-opened by path): reg_file_entry in files.img. Used by open
// fds, file mappings, the exe link, cwd and root.
import * as fs from 'node:fs';
import { abi } from '../sys';
import type { DumpCtx } from '../dump/context';
import { writeImage, readImage, type Entry, type Decoded } from '../images/image';
import type { RestoreCtx } from '../restore/context';
import { StasisError, ErrorCodes } from '../errors';
import { FD_TYPES } from './fdtypes';
import { NO_FOWN, type FileKind, type FdDesc } from './filekind';

export { NO_FOWN };
const { O } = abi;

/**
 * The file entry for `path` opened with `flags`, shared by every user of the
 * same key (default: the path and flags, as for mappings and cwd).
 */
export function regFileEntry(ctx: DumpCtx, path: string, flags: number, opts: { key?: string; pos?: bigint; statPath?: string } = {}): number {
  const key = opts.key ?? `path:${flags}:${path}`;
  return ctx.fileId(key, (id) => ({ type: FD_TYPES.REG, id, reg: regEntry(id, path, flags, opts.pos ?? 0n, opts.statPath ?? path) }));
}

function regEntry(id: number, path: string, flags: number, pos: bigint, statPath: string): Entry {
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
export function checkRegFile(e: Decoded, where: string, skipFileCheck: boolean): void {
  const name = e.name as string;
  let st: fs.Stats;
  try { st = fs.statSync(name); } catch {
    throw new StasisError(ErrorCodes.FILE_CHANGED, `${where}: file ${name} no longer exists`);
  }
  if (!skipFileCheck && e.size !== undefined && st.isFile() && BigInt(st.size) !== e.size) {
    throw new StasisError(ErrorCodes.FILE_CHANGED, `${where}: file ${name} changed size since the dump (${e.size} → ${st.size} bytes); --skip-file-check restores anyway`);
  }
}

export const regFileKind: FileKind = {
  name: 'regular file',
  type: FD_TYPES.REG,
  field: 'reg',
  match: (d) => d.st.isFile() || d.st.isDirectory() || (d.st.isCharacterDevice() && HARMLESS_CHR.has(d.link)),
  dump(ctx, d, id) {
    if (d.link.endsWith(' (deleted)') && d.st.isFile()) return dumpGhost(ctx, d, id);
    if (d.link.endsWith(' (deleted)')) throw new StasisError(ErrorCodes.UNSUPPORTED, `fd ${d.fd} of pid ${d.pid}: ${d.link} is deleted and not a regular file; not supported`);
    return regEntry(id, d.link, d.flags, d.info.pos, `/proc/${d.pid}/fd/${d.fd}`);
  },
  check(e, where, skipFileCheck) {
    if (e.ghostId === undefined) checkRegFile(e, where, skipFileCheck);
  },
  open(ctx, tr, e) {
    const flags = (e.flags as number) & ~(O.CREAT | O.EXCL | O.TRUNC | O.NOCTTY);
    const path = e.ghostId !== undefined ? ghostPath(ctx, e) : e.name;
    const fd = tr.task.open(path, flags);
    tr.task.call('lseek', fd, e.pos as bigint, 0 /* SEEK_SET */);
    return fd;
  },
};

/** Default --ghost-limit, as criu's. */
export const GHOST_LIMIT = 1 << 20;

/**
 * A file deleted while open: its contents go into the image (up to the
 * ghost limit) and it is re-created, opened and unlinked again on restore.
 */
function dumpGhost(ctx: DumpCtx, d: FdDesc, id: number): Entry {
  const limit = ctx.opts.ghostLimit ?? GHOST_LIMIT;
  if (d.st.size > limit) {
    throw new StasisError(ErrorCodes.UNSUPPORTED, `fd ${d.fd} of pid ${d.pid}: deleted file ${d.link} holds ${d.st.size} bytes, over the ghost limit of ${limit} (--ghost-limit)`);
  }
  const data = fs.readFileSync(`/proc/${d.pid}/fd/${d.fd}`);
  const remapId = ctx.ghosts.length + 1;
  ctx.ghosts.push({
    origId: id, remapId, data,
    entry: { uid: d.st.uid, gid: d.st.gid, mode: d.st.mode, dev: d.st.dev, ino: BigInt(d.st.ino), size: BigInt(data.length), chunks: false },
  });
  return regEntry(id, d.link.slice(0, -' (deleted)'.length), d.flags, d.info.pos, `/proc/${d.pid}/fd/${d.fd}`);
}

/** Write ghost files and the remap table (dump). */
export function writeGhosts(ctx: DumpCtx): void {
  for (const g of ctx.ghosts) writeImage(ctx.opts.dir, `ghost-file-${g.remapId}.img`, 'GHOST_FILE', [['ghost_file_entry', g.entry, g.data]]);
  writeImage(ctx.opts.dir, 'remap-fpath.img', 'REMAP_FPATH', ctx.ghosts.map((g) =>
    ['remap_file_path_entry', { orig_id: g.origId, remap_id: g.remapId, remap_type: 1 /* GHOST */ }]));
}

/**
 * Re-create a ghost file once (at its old path when that is free, else beside
 * it) for every opener; files-cleanup unlinks it again.
 */
function ghostPath(ctx: RestoreCtx, e: Decoded): string {
  const have = ctx.ghostFiles.get(e.ghostId);
  if (have) return have;
  const [g] = readImage(ctx.ckpt.dir, `ghost-file-${e.ghostId}.img`, 'GHOST_FILE', ['ghost_file_entry'], () => -1);
  if (!g) throw new StasisError(ErrorCodes.BAD_IMAGE, `${ctx.ckpt.dir}/ghost-file-${e.ghostId}.img: empty`);
  let path = e.name as string;
  if (fs.existsSync(path)) path = `${path}.stasis-ghost-${process.pid}-${e.ghostId}`;
  const fd = fs.openSync(path, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, g.mode & 0o7777);
  try {
    fs.writeSync(fd, g.extra);
    fs.fchownSync(fd, g.uid, g.gid);
    fs.fchmodSync(fd, g.mode & 0o7777);
  } finally {
    fs.closeSync(fd);
  }
  ctx.ghostFiles.set(e.ghostId, path);
  return path;
}
