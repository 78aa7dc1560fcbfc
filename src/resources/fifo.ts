// FIFOs (named pipes): fifo_entry naming the FIFO's path (a reg_file_entry)
// and its pipe; queued bytes in fifo-data.img. Restore opens the FIFO once
// read-write as a keeper (so no open blocks and the data has a pipe to wait
// in), writes the data through it, opens each fd non-blocking and then sets
// its real flags; the keeper goes in files-cleanup.
import * as fs from 'node:fs';
import { abi } from '../sys';
import { StasisError, ErrorCodes } from '../errors';
import { FD_TYPES } from '../images/criu';
import { defineFileUnit } from '../unit/unit';
import { regFileEntry, ghostFifoEntry, ghostFor, regFileUnit } from './regfile';
import { park, fileEntry } from './files';
import { namespacesUnit } from './ns/namespaces';
import { readPipeData, fillPipe, writePipeData, loadPipeData, type PipeData } from './pipes';

const { O, F } = abi;

export const fifoUnit = defineFileUnit({
  name: 'fifo',
  loadAfter: ['namespaces', 'regular files'],
  dumpState: () => new Map<number, PipeData>(),
  dumpPhases: [{
    name: 'fifo-data', after: ['files'],
    once: (ctx, st) => { if (st.size) ctx.write('fifo-data.img', 'FIFO_DATA', writePipeData(st)); },
  }],
  load: (ld) => loadPipeData(ld, 'fifo-data.img', 'FIFO_DATA'),
  /** A read-write opener of each FIFO (by pipe id), per process, parked. */
  restoreState: () => new Map<number, { pid: number; fd: number }>(),
  file: {
    type: FD_TYPES.FIFO,
    field: 'fifo',
    match: (d) => d.st.isFIFO() && !d.link.startsWith('pipe:'),
    dump(ctx, d, id, st) {
      if (!st.has(d.st.ino)) st.set(d.st.ino, readPipeData(d.pid, d.fd));
      // A deleted one: made again as a ghost, opened, removed again.
      const regfId = d.link.endsWith(' (deleted)') ? ghostFifoEntry(ctx, d) : regFileEntry(ctx, d.link, d.flags, { key: `fifo-path:${d.flags}:${d.link}` });
      return { id, pipe_id: d.st.ino, regf_id: regfId };
    },
    check(e, where) {
      if (e.regf_id === undefined) throw new StasisError(ErrorCodes.BAD_IMAGE, `${where}: FIFO without a path entry`);
    },
    validate(e, where, ld) {
      const reg = fileEntry(ld, e.regf_id!).reg;
      if (!reg) throw new StasisError(ErrorCodes.BAD_IMAGE, `${where}: FIFO path entry ${e.regf_id} is not a path`);
      if (ld.loaded(regFileUnit).ghosts.has(e.regf_id!)) return; // made again
      if (ld.loaded(namespacesUnit).has('mnt')) return; // in the tree's own mount namespace: opened there
      let st: fs.Stats;
      try { st = fs.statSync(reg.name); } catch { throw new StasisError(ErrorCodes.FILE_CHANGED, `${where}: FIFO ${reg.name} no longer exists`); }
      if (!st.isFIFO()) throw new StasisError(ErrorCodes.FILE_CHANGED, `${where}: ${reg.name} is no longer a FIFO`);
    },
    open(ctx, tr, e, keepers, l) {
      const e0 = fileEntry(ctx, e.regf_id!).reg!;
      const reg = { ...e0, name: ghostFor(ctx, e0)?.slice(ctx.fsRoot.length) ?? e0.name };
      const t = tr.task;
      const have = keepers.get(e.pipe_id);
      if (!have || have.pid !== tr.img.pid) {
        const fd = park(ctx, tr, t.open(reg.name, O.RDWR | O.NONBLOCK));
        keepers.set(e.pipe_id, { pid: tr.img.pid, fd });
        const pd = have ? undefined : l.get(e.pipe_id);
        if (pd?.data.length) fillPipe(tr.task.pid, fd, pd.data, `FIFO ${reg.name}`);
      }
      const fd = t.open(reg.name, (reg.flags & ~(O.CREAT | O.EXCL | O.TRUNC)) | O.NONBLOCK);
      if (!(reg.flags & O.NONBLOCK)) t.call('fcntl', fd, F.SETFL, reg.flags & ~O.NONBLOCK);
      return fd;
    },
    describe: (e, files) => `fifo ${files.get(e.regf_id ?? 0)?.reg?.name ?? ''}`,
  },
});
