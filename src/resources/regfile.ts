// Regular files (and character devices re-opened by path, such as /dev/null):
// reg_file_entry in files.img. Used by open fds, file mappings, the exe link,
// cwd and root.
import * as fs from 'node:fs';
import type { DumpCtx } from '../dump/context';
import type { Entry } from '../images/image';
import { FD_TYPES } from './fdtypes';

export const NO_FOWN = { uid: 0, euid: 0, signum: 0, pid_type: 0, pid: 0 };

/**
 * The file entry for `path` opened with `flags`, shared by every user of the
 * same key (default: the path and flags, as for mappings and cwd).
 */
export function regFileEntry(ctx: DumpCtx, path: string, flags: number, opts: { key?: string; pos?: bigint; statPath?: string } = {}): number {
  const key = opts.key ?? `path:${flags}:${path}`;
  return ctx.fileId(key, (id) => {
    let st: fs.Stats | undefined;
    try { st = fs.statSync(opts.statPath ?? path); } catch { /* checked on restore */ }
    const reg: Entry = {
      id, flags, pos: opts.pos ?? 0n, fown: NO_FOWN, name: path,
      ...(st ? { size: BigInt(st.isFile() ? st.size : 0), mode: st.mode } : {}),
    };
    return { type: FD_TYPES.REG, id, reg };
  });
}
