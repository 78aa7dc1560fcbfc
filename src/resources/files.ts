// The fd table: fdinfo-ID.img (fd number, close-on-exec, file id) and the
// files each fd refers to. One open file description shared by several fds
// gets one file id (kcmp KCMP_FILE), so it stays shared after restore.
import * as fs from 'node:fs';
import { abi, kcmp } from '../sys';
import { listFds, readFdInfo } from '../proc/proc';
import { writeImage, type Entry } from '../images/image';
import type { DumpCtx, ProcessDump } from '../dump/context';
import { StasisError, ErrorCodes } from '../errors';
import { regFileEntry } from './regfile';
import { FD_TYPES } from './fdtypes';

const { O, KCMP } = abi;

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
  const seen: { fd: number; dev: number; ino: number; id: number }[] = [];
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
    let id: number;
    if (kind === 'reg' || (kind === 'chr' && HARMLESS_CHR.has(link))) {
      if (link.endsWith(' (deleted)')) throw new StasisError(ErrorCodes.UNSUPPORTED, `fd ${fd} of pid ${pid}: ${link} is deleted; deleted files are not supported yet`);
      // The same open file description behind two fds: one entry.
      const twin = seen.find((s) => s.dev === st.dev && s.ino === st.ino && kcmp(pid, pid, KCMP.FILE, s.fd, fd) === 0);
      id = twin ? twin.id : regFileEntry(ctx, link, flags, { key: `ofd:${pid}:${fd}`, pos: info.pos, statPath: `/proc/${pid}/fd/${fd}` });
      seen.push({ fd, dev: st.dev, ino: st.ino, id });
    } else {
      throw new StasisError(ErrorCodes.UNSUPPORTED, `fd ${fd} of pid ${pid}: ${kind} (${link}) is not supported yet`);
    }
    entries.push({ id, flags: cloexec ? 1 : 0, type: FD_TYPES.REG, fd });
  }
  writeImage(ctx.opts.dir, `fdinfo-${pd.ids.files_id}.img`, 'FDINFO', entries.map((e) => ['fdinfo_entry', e]));
}

export function writeFilesImage(ctx: DumpCtx): void {
  writeImage(ctx.opts.dir, 'files.img', 'FILES', ctx.files.map((e) => ['file_entry', e]));
}

// ---------------------------------------------------------------- restore

import type { RestoreCtx, TaskRestore } from '../restore/context';

/**
 * Re-open every fd at its number: one open per file id (so fds that shared an
 * open file description share one again), then dup to each further fd.
 */
export function restoreFiles(ctx: RestoreCtx, tr: TaskRestore): void {
  const t = tr.task;
  // The task came from the stub: drop whatever it inherited.
  t.call('close_range', 0, 0xffffffff, 0);
  // In ascending order every lower target is taken already, so a fresh open
  // lands on the target or in a gap below it (then moved up with dup3).
  const fds = [...tr.img.fdinfo].sort((a, b) => a.fd - b.fd);
  const opened = new Map<number, number>(); // file id -> fd holding it
  for (const fi of fds) {
    const cloexec = (fi.flags & 1) !== 0;
    const have = opened.get(fi.id);
    if (have !== undefined) {
      t.call('dup3', have, fi.fd, cloexec ? O.CLOEXEC : 0);
      continue;
    }
    const f = ctx.ckpt.files.get(fi.id)!;
    const flags = ((f.reg.flags as number) & ~(O.CREAT | O.EXCL | O.TRUNC | O.NOCTTY)) | (cloexec ? O.CLOEXEC : 0);
    let fd = t.open(f.reg.name, flags);
    if (fd !== fi.fd) {
      t.call('dup3', fd, fi.fd, cloexec ? O.CLOEXEC : 0);
      t.call('close', fd);
      fd = fi.fd;
    }
    t.call('lseek', fd, f.reg.pos as bigint, 0 /* SEEK_SET */);
    opened.set(fi.id, fd);
  }
}
