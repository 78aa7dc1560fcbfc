// Regular files (and character devices that carry no state, such as
// /dev/null, re-opened by path): reg_file_entry in files.img. Used by open
// fds, file mappings, the exe link, cwd and root.
import * as fs from 'node:fs';
import { abi } from '../sys';
import type { DumpCtx } from '../dump/context';
import type { Entry, Decoded } from '../images/image';
import { StasisError, ErrorCodes } from '../errors';
import { FD_TYPES } from './fdtypes';
import { NO_FOWN, type FileKind } from './filekind';

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
  dump(_ctx, d, id) {
    if (d.link.endsWith(' (deleted)')) throw new StasisError(ErrorCodes.UNSUPPORTED, `fd ${d.fd} of pid ${d.pid}: ${d.link} is deleted; deleted files are not supported yet`);
    return regEntry(id, d.link, d.flags, d.info.pos, `/proc/${d.pid}/fd/${d.fd}`);
  },
  check: checkRegFile,
  open(_ctx, tr, e) {
    const flags = (e.flags as number) & ~(O.CREAT | O.EXCL | O.TRUNC | O.NOCTTY);
    const fd = tr.task.open(e.name, flags);
    tr.task.call('lseek', fd, e.pos as bigint, 0 /* SEEK_SET */);
    return fd;
  },
};
