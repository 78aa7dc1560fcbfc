// FIFOs (named pipes): fifo_entry naming the FIFO's path (a reg_file_entry)
// and its pipe; queued bytes in fifo-data.img. Restore opens the FIFO once
// read-write as a keeper (so no open blocks and the data has a pipe to wait
// in), writes the data through it, opens each fd non-blocking and then sets
// its real flags; the keeper goes in files-cleanup.
import * as fs from 'node:fs';
import { abi } from '../sys';
import { StasisError, ErrorCodes } from '../errors';
import type { RestoreCtx, TaskRestore } from '../restore/context';
import type { Decoded } from '../images/image';
import { FD_TYPES } from './fdtypes';
import type { FileKind } from './filekind';
import { readPipeData } from './pipes';
import { regFileEntry } from './regfile';
import { park, fillPipe } from './fdutil';

const { O, F } = abi;

function keeper(ctx: RestoreCtx, tr: TaskRestore, e: Decoded, path: string): number {
  const have = ctx.fifoKeepers.get(e.pipe_id);
  if (have && have.pid === tr.img.pid) return have.fd;
  const fd = park(ctx, tr, tr.task.open(path, O.RDWR | O.NONBLOCK));
  ctx.fifoKeepers.set(e.pipe_id, { pid: tr.img.pid, fd });
  const pd = have ? undefined : ctx.ckpt.fifoData.get(e.pipe_id);
  if (pd?.data.length) fillPipe(tr.img.pid, fd, pd.data, `FIFO ${path}`);
  return fd;
}

export const fifoKind: FileKind = {
  name: 'FIFO',
  type: FD_TYPES.FIFO,
  field: 'fifo',
  match: (d) => d.st.isFIFO() && !d.link.startsWith('pipe:'),
  dump(ctx, d, id) {
    if (!ctx.fifoData.has(d.st.ino)) ctx.fifoData.set(d.st.ino, readPipeData(d.pid, d.fd));
    const regfId = regFileEntry(ctx, d.link, d.flags, { key: `fifo-path:${d.flags}:${d.link}` });
    return { id, pipe_id: d.st.ino, regf_id: regfId };
  },
  open(ctx, tr, e) {
    const reg = ctx.ckpt.files.get(e.regf_id)?.reg;
    if (!reg) throw new StasisError(ErrorCodes.BAD_IMAGE, `FIFO file id ${e.id}: path entry ${e.regf_id} missing`);
    let st: fs.Stats;
    try { st = fs.statSync(reg.name); } catch { throw new StasisError(ErrorCodes.FILE_CHANGED, `FIFO ${reg.name} no longer exists`); }
    if (!st.isFIFO()) throw new StasisError(ErrorCodes.FILE_CHANGED, `${reg.name} is no longer a FIFO`);
    keeper(ctx, tr, e, reg.name);
    const t = tr.task;
    const flags = reg.flags as number;
    const fd = t.open(reg.name, (flags & ~(O.CREAT | O.EXCL | O.TRUNC)) | O.NONBLOCK);
    if (!(flags & O.NONBLOCK)) t.call('fcntl', fd, F.SETFL, flags & ~O.NONBLOCK);
    return fd;
  },
};
