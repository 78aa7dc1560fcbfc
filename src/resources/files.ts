// The fd table: fdinfo-ID.img (fd number, close-on-exec, file id) and the
// files each fd refers to. One open file description shared by several fds
// gets one file id (kcmp KCMP_FILE), so it stays shared after restore.
import * as fs from 'node:fs';
import { abi, kcmp, sys, sysTry, addressOf } from '../sys';
import { listFds, readFdInfo } from '../proc/proc';
import { writeImage, type Entry } from '../images/image';
import type { DumpCtx, ProcessDump } from '../dump/context';
import { StasisError, ErrorCodes } from '../errors';
import { regFileEntry, NO_FOWN } from './regfile';
import { FD_TYPES } from './fdtypes';

const { O, KCMP, F, SPLICE_F_NONBLOCK } = abi;

function fdKind(st: fs.Stats, link: string): string {
  if (st.isFile() || st.isDirectory()) return 'reg';
  if (st.isCharacterDevice()) return 'chr';
  if (st.isFIFO()) return link.startsWith('pipe:') ? 'pipe' : 'fifo';
  if (st.isSocket()) return 'socket';
  if (link.startsWith('anon_inode:')) return link.slice('anon_inode:'.length);
  return 'unknown';
}

/** Character devices that carry no state and are safe to re-open by path. */
const HARMLESS_CHR = new Set(['/dev/null', '/dev/zero', '/dev/full', '/dev/random', '/dev/urandom']);

export function dumpFiles(ctx: DumpCtx, pd: ProcessDump): void {
  const pid = pd.pid;
  const entries: Entry[] = [];
  const seen = ctx.openFiles;
  for (const fd of listFds(pid)) {
    const link = fs.readlinkSync(`/proc/${pid}/fd/${fd}`);
    let st: fs.Stats;
    try { st = fs.statSync(`/proc/${pid}/fd/${fd}`); } catch (e) {
      throw new StasisError(ErrorCodes.UNSUPPORTED, `fd ${fd} (${link}) of pid ${pid}: cannot stat: ${(e as Error).message}`);
    }
    const info = readFdInfo(pid, fd);
    const kind = fdKind(st, link);
    const cloexec = (info.flags & O.CLOEXEC) !== 0;
    const flags = info.flags & ~O.CLOEXEC;
    // The same open file description behind two fds (of this or another
    // process of the tree): one file entry.
    const twin = seen.find((s) => s.dev === st.dev && s.ino === st.ino && kcmp(s.pid, pid, KCMP.FILE, s.fd, fd) === 0);
    let id: number;
    let type: number;
    if (kind === 'reg' || (kind === 'chr' && HARMLESS_CHR.has(link))) {
      if (link.endsWith(' (deleted)')) throw new StasisError(ErrorCodes.UNSUPPORTED, `fd ${fd} of pid ${pid}: ${link} is deleted; deleted files are not supported yet`);
      type = FD_TYPES.REG;
      id = twin ? twin.id : regFileEntry(ctx, link, flags, { key: `ofd:${pid}:${fd}`, pos: info.pos, statPath: `/proc/${pid}/fd/${fd}` });
    } else if (kind === 'pipe') {
      type = FD_TYPES.PIPE;
      id = twin ? twin.id : ctx.fileId(`ofd:${pid}:${fd}`, (nid) => ({ type: FD_TYPES.PIPE, id: nid, pipe: { id: nid, pipe_id: st.ino, flags, fown: NO_FOWN } }));
      if (!ctx.pipeData.has(st.ino)) ctx.pipeData.set(st.ino, readPipeData(pid, fd));
    } else {
      throw new StasisError(ErrorCodes.UNSUPPORTED, `fd ${fd} of pid ${pid}: ${kind} (${link}) is not supported yet`);
    }
    if (!twin) seen.push({ pid, fd, dev: st.dev, ino: st.ino, id });
    entries.push({ id, flags: cloexec ? 1 : 0, type, fd });
  }
  writeImage(ctx.opts.dir, `fdinfo-${pd.ids.files_id}.img`, 'FDINFO', entries.map((e) => ['fdinfo_entry', e]));
}

/**
 * A pipe's queued bytes, without taking them: open the pipe anew through
 * /proc (a reader of our own), tee() its contents into a pipe of ours, read that.
 */
function readPipeData(pid: number, fd: number): { data: Buffer; size: number } {
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

export function writeFilesImage(ctx: DumpCtx): void {
  writeImage(ctx.opts.dir, 'files.img', 'FILES', ctx.files.map((e) => ['file_entry', e]));
  writeImage(ctx.opts.dir, 'pipes-data.img', 'PIPES_DATA', [...ctx.pipeData].map(([ino, p]) =>
    ['pipe_data_entry', { pipe_id: ino, bytes: p.data.length, size: p.size }, p.data]));
}

// ---------------------------------------------------------------- restore

import type { RestoreCtx, TaskRestore } from '../restore/context';
import type { RemoteTask } from '../restore/remote';
import type { Decoded } from '../images/image';

/** Copy fd `fd` of process `from` into the task (same open file description). */
function fetchFd(t: RemoteTask, from: number, fd: number): number {
  const pidfd = Number(t.call('pidfd_open', from, 0));
  try {
    return Number(t.call('pidfd_getfd', pidfd, fd, 0));
  } finally {
    t.call('close', pidfd);
  }
}

/** Park an fd above every fd number the task will use; returns the new number. */
function park(ctx: RestoreCtx, tr: TaskRestore, fd: number): number {
  const above = tr.img.fdinfo.reduce((m, f) => Math.max(m, f.fd), 2) + 1;
  const parked = Number(tr.task.call('fcntl', fd, F.DUPFD_CLOEXEC, above));
  tr.task.call('close', fd);
  ctx.parked.push({ pid: tr.img.pid, fd: parked });
  return parked;
}

/** Create a pipe in the task with its queued data; both ends parked. */
function createPipe(ctx: RestoreCtx, tr: TaskRestore, f: Decoded): { pid: number; r: number; w: number } {
  const t = tr.task;
  t.call('pipe2', t.scratch + 3072n, O.CLOEXEC);
  const ends = t.get(8, 3072);
  const r = park(ctx, tr, ends.readInt32LE(0));
  const w = park(ctx, tr, ends.readInt32LE(4));
  const pd = ctx.ckpt.pipeData.get(f.pipe.pipe_id);
  if (pd?.size) t.call('fcntl', w, F.SETPIPE_SZ, pd.size);
  if (pd && pd.data.length) {
    // Written from outside through a writer of our own on the same pipe.
    const wfd = fs.openSync(`/proc/${tr.img.pid}/fd/${w}`, O.WRONLY | O.NONBLOCK);
    try {
      const n = fs.writeSync(wfd, pd.data);
      if (n !== pd.data.length) throw new StasisError(ErrorCodes.RESTORE_FAILED, `pipe ${f.pipe.pipe_id}: wrote ${n} of ${pd.data.length} queued bytes`);
    } finally {
      fs.closeSync(wfd);
    }
  }
  const p = { pid: tr.img.pid, r, w };
  ctx.pipes.set(f.pipe.pipe_id, p);
  return p;
}

/** A new fd in the task for file `id` (sharing its open file description with every other holder). */
function materialize(ctx: RestoreCtx, tr: TaskRestore, id: number): number {
  const t = tr.task;
  const holder = ctx.fileHolders.get(id);
  if (holder) return holder.pid === tr.img.pid ? Number(t.call('dup', holder.fd)) : fetchFd(t, holder.pid, holder.fd);
  const f = ctx.ckpt.files.get(id)!;
  if (f.type === FD_TYPES.PIPE) {
    const p = ctx.pipes.get(f.pipe.pipe_id) ?? createPipe(ctx, tr, f);
    const end = (f.pipe.flags & O.ACCMODE) === O.WRONLY ? p.w : p.r;
    const fd = p.pid === tr.img.pid ? Number(t.call('dup', end)) : fetchFd(t, p.pid, end);
    t.call('fcntl', fd, F.SETFL, f.pipe.flags & (O.NONBLOCK | O.APPEND | O.DIRECT));
    return fd;
  }
  const flags = (f.reg.flags as number) & ~(O.CREAT | O.EXCL | O.TRUNC | O.NOCTTY);
  const fd = t.open(f.reg.name, flags);
  t.call('lseek', fd, f.reg.pos as bigint, 0 /* SEEK_SET */);
  return fd;
}

/**
 * Put every fd back at its number. In ascending order every lower target is
 * taken already, so a new fd lands on its target or below it (then moved up
 * with dup3). Files shared with an earlier process are fetched from it with
 * pidfd_getfd, so they share one open file description (and offset) again.
 */
export function restoreFiles(ctx: RestoreCtx, tr: TaskRestore): void {
  const t = tr.task;
  // The task came from the stub: drop whatever it inherited.
  t.call('close_range', 0, 0xffffffff, 0);
  const fds = [...tr.img.fdinfo].sort((a, b) => a.fd - b.fd);
  for (const fi of fds) {
    const cloexec = (fi.flags & 1) !== 0;
    let fd = materialize(ctx, tr, fi.id);
    if (fd !== fi.fd) {
      t.call('dup3', fd, fi.fd, cloexec ? O.CLOEXEC : 0);
      t.call('close', fd);
      fd = fi.fd;
    } else {
      t.call('fcntl', fd, F.SETFD, cloexec ? 1 : 0);
    }
    if (!ctx.fileHolders.has(fi.id)) ctx.fileHolders.set(fi.id, { pid: tr.img.pid, fd });
  }
}

/** Close the pipe ends parked while files were restored (once every process has its fds). */
export function closeParked(ctx: RestoreCtx, tr: TaskRestore): void {
  for (const p of ctx.parked) if (p.pid === tr.img.pid) tr.task.call('close', p.fd);
}
