// Pipes: pipe_entry per end in files.img, queued bytes in pipes-data.img.
// Both ends of a pipe are created at once by the first process that needs
// either; the other ends are parked there and fetched by whoever needs them.
import * as fs from 'node:fs';
import { abi, sys, sysTry, addressOf } from '../sys';
import type { RestoreCtx, TaskRestore } from '../restore/context';
import type { Decoded } from '../images/image';
import { StasisError, ErrorCodes } from '../errors';
import { FD_TYPES } from './fdtypes';
import { NO_FOWN, type FileKind } from './filekind';
import { park, fetchFd, fillPipe } from './fdutil';

const { O, F, SPLICE_F_NONBLOCK } = abi;

/**
 * A pipe's queued bytes, without taking them: open the pipe anew through
 * /proc (a reader of our own), tee() its contents into a pipe of ours, read that.
 */
export function readPipeData(pid: number, fd: number): { data: Buffer; size: number } {
  const rfd = fs.openSync(`/proc/${pid}/fd/${fd}`, O.RDONLY | O.NONBLOCK);
  const ends = Buffer.alloc(8);
  try {
    const size = sys('fcntl', rfd, F.GETPIPE_SZ);
    sys('pipe2', addressOf(ends), O.NONBLOCK | O.CLOEXEC);
    const [tr, tw] = [ends.readInt32LE(0), ends.readInt32LE(4)];
    try {
      sys('fcntl', tw, F.SETPIPE_SZ, size);
      const n = sysTry('tee', rfd, tw, size, SPLICE_F_NONBLOCK);
      if (n < 0 && n !== -11 /* EAGAIN: empty */) throw new StasisError(ErrorCodes.UNSUPPORTED, `fd ${fd} of pid ${pid}: cannot read pipe data (tee: errno ${-n})`);
      const data = Buffer.alloc(Math.max(n, 0));
      let got = 0;
      while (got < data.length) got += fs.readSync(tr, data, got, data.length - got, null);
      return { data, size };
    } finally {
      sys('close', tr); sys('close', tw);
    }
  } finally {
    fs.closeSync(rfd);
  }
}

/** Create a pipe in the task with its queued data; both ends parked. */
function createPipe(ctx: RestoreCtx, tr: TaskRestore, e: Decoded): { pid: number; r: number; w: number } {
  const t = tr.task;
  t.call('pipe2', t.scratch + 3072n, O.CLOEXEC);
  const ends = t.get(8, 3072);
  const r = park(ctx, tr, ends.readInt32LE(0));
  const w = park(ctx, tr, ends.readInt32LE(4));
  const pd = ctx.ckpt.pipeData.get(e.pipe_id);
  if (pd?.size) t.call('fcntl', w, F.SETPIPE_SZ, pd.size);
  if (pd && pd.data.length) fillPipe(tr.img.pid, w, pd.data, `pipe ${e.pipe_id}`);
  const p = { pid: tr.img.pid, r, w };
  ctx.pipes.set(e.pipe_id, p);
  return p;
}

export const pipeKind: FileKind = {
  name: 'pipe',
  type: FD_TYPES.PIPE,
  field: 'pipe',
  match: (d) => d.st.isFIFO() && d.link.startsWith('pipe:'),
  dump(ctx, d, id) {
    if (!ctx.pipeData.has(d.st.ino)) ctx.pipeData.set(d.st.ino, readPipeData(d.pid, d.fd));
    return { id, pipe_id: d.st.ino, flags: d.flags, fown: NO_FOWN };
  },
  open(ctx, tr, e) {
    const t = tr.task;
    const p = ctx.pipes.get(e.pipe_id) ?? createPipe(ctx, tr, e);
    const end = (e.flags & O.ACCMODE) === O.WRONLY ? p.w : p.r;
    const fd = p.pid === tr.img.pid ? Number(t.call('dup', end)) : fetchFd(t, p.pid, end);
    t.call('fcntl', fd, F.SETFL, e.flags & (O.NONBLOCK | O.APPEND | O.DIRECT));
    return fd;
  },
};
