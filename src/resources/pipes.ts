// Pipes: pipe_entry per end in files.img, queued bytes in pipes-data.img.
// Both ends of a pipe are created at once by the first process that needs
// either; the other ends are parked there and fetched by whoever needs them.
import * as fs from 'node:fs';
import { abi, sys, sysTry, addressOf } from '../sys';
import { outBuf, type RemoteTask } from '../compel/remote';
import { giveFd } from '../compel/give-fd';
import { parts, type Msg } from '../images/image';
import { FD_TYPES, NO_FOWN } from '../images/criu';
import { StasisError, ErrorCodes } from '../errors';
import { defineFileUnit } from '../unit/unit';
import type { Loading } from '../unit/checkpoint';
import { park, fetchFd } from './files';

const { O, F, SPLICE_F_NONBLOCK, ERRNO, readI32s } = abi;

export interface PipeData { data: Buffer; size?: number }

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
    const [tr, tw] = readI32s(ends, 2);
    try {
      sys('fcntl', tw, F.SETPIPE_SZ, size);
      const n = sysTry('tee', rfd, tw, size, SPLICE_F_NONBLOCK);
      if (n < 0 && n !== -ERRNO.EAGAIN /* empty */) throw new StasisError(ErrorCodes.UNSUPPORTED, `fd ${fd} of pid ${pid}: cannot read pipe data (tee: errno ${-n})`);
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

/**
 * Queue `data` into the pipe or FIFO behind the task's fd, from outside,
 * through a writer of our own on the same pipe.
 */
export function fillPipe(pid: number, fd: number, data: Buffer, what: string): void {
  const w = fs.openSync(`/proc/${pid}/fd/${fd}`, O.WRONLY | O.NONBLOCK);
  try {
    const n = fs.writeSync(w, data);
    if (n !== data.length) throw new StasisError(ErrorCodes.RESTORE_FAILED, `${what}: wrote ${n} of ${data.length} queued bytes`);
  } finally {
    fs.closeSync(w);
  }
}

/** pipes-data.img / fifo-data.img: queued bytes by pipe id (the pipe's inode). */
export function writePipeData(data: Map<number, PipeData>): ReturnType<typeof parts> {
  return [...data].map(([ino, p]) => ({ msg: 'pipe_data_entry' as const, entry: { pipe_id: ino, bytes: p.data.length, size: p.size }, payload: p.data }));
}

export function loadPipeData(ld: Loading, file: string, kind: 'PIPES_DATA' | 'FIFO_DATA'): Map<number, PipeData> {
  const m = new Map<number, PipeData>();
  if (ld.images.exists(file)) {
    for (const { entry, payload } of ld.images.withPayloads(file, kind, 'pipe_data_entry', (e) => e.bytes)) {
      m.set(entry.pipe_id, { data: payload, size: entry.size });
    }
  }
  return m;
}

/** Where a pipe's parked ends are: the holder's pid in the images and ours (`real`). */
type PipeEnds = { pid: number; real: number; r: number; w: number; rUsed?: boolean; wUsed?: boolean };

/** A new open file description of a pipe end parked in `holder` (our id), as a new fd of task `t`. */
function reopenEnd(t: RemoteTask, holder: number, end: number, write: boolean): number {
  const ours = fs.openSync(`/proc/${holder}/fd/${end}`, (write ? O.WRONLY : O.RDONLY) | O.NONBLOCK | O.CLOEXEC);
  try {
    return giveFd(t, ours);
  } finally {
    fs.closeSync(ours);
  }
}

export const pipeUnit = defineFileUnit({
  name: 'pipes',
  dumpState: () => new Map<number, PipeData>(),
  dumpPhases: [{ name: 'pipes-data', after: ['files'], once: (ctx, st) => ctx.write('pipes-data.img', 'PIPES_DATA', writePipeData(st)) }],
  load: (ld) => loadPipeData(ld, 'pipes-data.img', 'PIPES_DATA'),
  restoreState: () => new Map<number, PipeEnds>(),
  file: {
    type: FD_TYPES.PIPE,
    field: 'pipe',
    match: (d) => d.st.isFIFO() && d.link.startsWith('pipe:'),
    dump(_ctx, d, id, st) {
      if (!st.has(d.st.ino)) st.set(d.st.ino, readPipeData(d.pid, d.fd));
      return { id, pipe_id: d.st.ino, flags: d.flags, fown: NO_FOWN };
    },
    open(ctx, tr, e: Msg<'pipe_entry'>, st, l) {
      const t = tr.task;
      let p = st.get(e.pipe_id);
      if (!p) {
        // Both ends at once, parked; the queued data goes in through the write end.
        const ends = outBuf(8);
        t.call('pipe2', ends, O.CLOEXEC);
        const [r0, w0] = readI32s(ends.data, 2);
        p = { pid: tr.img.pid, real: t.pid, r: park(ctx, tr, r0), w: park(ctx, tr, w0) };
        const pd = l.get(e.pipe_id);
        if (pd?.size) t.call('fcntl', p.w, F.SETPIPE_SZ, pd.size);
        if (pd && pd.data.length) fillPipe(tr.task.pid, p.w, pd.data, `pipe ${e.pipe_id}`);
        st.set(e.pipe_id, p);
      }
      const write = (e.flags & O.ACCMODE) === O.WRONLY;
      const end = write ? p.w : p.r;
      // The end's first open file description is the one pipe2 made; another
      // (an open of /proc/PID/fd/N, with flags of its own) is opened anew.
      const first = write ? !p.wUsed : !p.rUsed;
      if (write) p.wUsed = true; else p.rUsed = true;
      const fd = !first ? reopenEnd(t, p.real, end, write)
        : p.pid === tr.img.pid ? t.callNum('dup', end) : fetchFd(t, p.pid, end);
      t.call('fcntl', fd, F.SETFL, e.flags & (O.NONBLOCK | O.APPEND | O.DIRECT));
      return fd;
    },
    describe: (e) => `pipe:[${e.pipe_id}]`,
  },
});
