// The fd table: fdinfo-ID.img (fd number, close-on-exec, file id) and the
// files each fd refers to. One open file description shared by several fds
// gets one file id (kcmp KCMP_FILE), so it stays shared after restore.
import * as fs from 'node:fs';
import { abi, kcmp } from '../sys';
import { listFds, readFdInfo } from '../proc/proc';
import { writeImage, type Entry } from '../images/image';
import type { DumpCtx, ProcessDump } from '../dump/context';
import { StasisError, ErrorCodes } from '../errors';
import type { FdDesc } from './filekind';
import { FILE_KINDS, kindOfType } from './registry';
import { fetchFd } from './fdutil';
import { writeGhosts } from './regfile';
import { writeMemfdImage } from './memfd';
import { externPeerEntry } from './sockets-unix';

const SOCK_STREAM = 1;

const { O, KCMP, F } = abi;

function describeFd(st: fs.Stats, link: string): string {
  if (st.isCharacterDevice()) return `character device ${link}`;
  if (st.isFIFO()) return `FIFO ${link}`;
  if (st.isSocket()) return `socket ${link}`;
  return link;
}

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
    const d: FdDesc = { pid, fd, link, st, info, flags: info.flags & ~O.CLOEXEC };
    const kind = FILE_KINDS.find((k) => k.match(d));
    if (!kind) throw new StasisError(ErrorCodes.UNSUPPORTED, `fd ${fd} of pid ${pid}: ${describeFd(st, link)} is not supported yet`);
    // The same open file description behind two fds (of this or another
    // process of the tree): one file entry.
    const twin = seen.find((s) => s.dev === st.dev && s.ino === st.ino && kcmp(s.pid, pid, KCMP.FILE, s.fd, fd) === 0);
    const id = twin ? twin.id : ctx.fileId(`ofd:${pid}:${fd}`, (nid) => ({ type: kind.type, id: nid, [kind.field]: kind.dump(ctx, d, nid) }));
    if (!twin) seen.push({ pid, fd, dev: st.dev, ino: st.ino, id });
    entries.push({ id, flags: info.flags & O.CLOEXEC ? 1 : 0, type: kind.type, fd });
  }
  writeImage(ctx.opts.dir, `fdinfo-${pd.ids.files_id}.img`, 'FDINFO', entries.map((e) => ['fdinfo_entry', e]));
}

export function writeFilesImage(ctx: DumpCtx): void {
  checkUnixPeers(ctx);
  writeGhosts(ctx);
  writeMemfdImage(ctx);
  writeImage(ctx.opts.dir, 'files.img', 'FILES', ctx.files.map((e) => ['file_entry', e]));
  writeImage(ctx.opts.dir, 'pipes-data.img', 'PIPES_DATA', [...ctx.pipeData].map(([ino, p]) =>
    ['pipe_data_entry', { pipe_id: ino, bytes: p.data.length, size: p.size }, p.data]));
  if (ctx.fifoData.size) {
    writeImage(ctx.opts.dir, 'fifo-data.img', 'FIFO_DATA', [...ctx.fifoData].map(([ino, p]) =>
      ['pipe_data_entry', { pipe_id: ino, bytes: p.data.length, size: p.size }, p.data]));
  }
  writeImage(ctx.opts.dir, 'sk-queues.img', 'SK_QUEUES', ctx.skQueues.map((q) =>
    ['sk_packet_entry', { id_for: q.id, length: q.data.length, addr: q.addr }, q.data]));
}

/**
 * A unix socket whose peer is outside the tree cannot be re-connected to that
 * very socket. With --ext-unix-sk a datagram socket connected to a named peer
 * (syslog's /dev/log, say) is connected to that name again: the peer goes into
 * files.img as an external entry (uflags USK_EXTERN), referenced by no fd.
 */
function checkUnixPeers(ctx: DumpCtx): void {
  for (const [ino, u] of ctx.unixSocks) {
    if (!u.peer || ctx.unixSocks.has(u.peer)) continue;
    const peer = ctx.unixDiag().get(u.peer);
    if (ctx.opts.extUnixSk && u.type !== SOCK_STREAM && peer?.name.length) {
      ctx.fileId(`unix-extern:${u.peer}`, (id) => externPeerEntry(id, u.peer, peer.type, peer.name));
      continue;
    }
    const how = u.type === SOCK_STREAM ? 'a stream connection cannot be re-established to it'
      : peer?.name.length ? 'dump with --ext-unix-sk to connect to its name again' : 'it has no name to connect to again';
    throw new StasisError(ErrorCodes.UNSUPPORTED, `fd ${u.fd} of pid ${u.pid}: unix socket ${ino} is connected to socket ${u.peer} outside the dumped tree; ${how}`);
  }
}

// ---------------------------------------------------------------- restore

import type { RestoreCtx, TaskRestore } from '../restore/context';

/** A new fd in the task for file `id` (sharing its open file description with every other holder). */
function materialize(ctx: RestoreCtx, tr: TaskRestore, id: number): number {
  const t = tr.task;
  const holder = ctx.fileHolders.get(id);
  if (holder) return holder.pid === tr.img.pid ? Number(t.call('dup', holder.fd)) : fetchFd(t, holder.pid, holder.fd);
  const f = ctx.ckpt.files.get(id)!;
  const kind = kindOfType(f.type)!;
  return kind.open(ctx, tr, f[kind.field]);
}

/**
 * Put every fd back at its number. In ascending order every lower target is
 * taken already, so a new fd lands on its target or below it (then moved up
 * with dup3). Files shared with an earlier process are fetched from it with
 * pidfd_getfd, so they share one open file description (and offset) again.
 * Kinds with a finishing step (epoll: its targets) run it once all fds are in.
 */
export function restoreFiles(ctx: RestoreCtx, tr: TaskRestore): void {
  const t = tr.task;
  const fds = [...tr.img.fdinfo].sort((a, b) => a.fd - b.fd);
  const created: { id: number; fd: number }[] = [];
  for (const fi of fds) {
    const cloexec = (fi.flags & 1) !== 0;
    const fresh = !ctx.fileHolders.has(fi.id);
    let fd = materialize(ctx, tr, fi.id);
    if (fd !== fi.fd) {
      t.call('dup3', fd, fi.fd, cloexec ? O.CLOEXEC : 0);
      t.call('close', fd);
      fd = fi.fd;
    } else {
      t.call('fcntl', fd, F.SETFD, cloexec ? 1 : 0);
    }
    if (fresh) {
      ctx.fileHolders.set(fi.id, { pid: tr.img.pid, fd });
      created.push({ id: fi.id, fd });
    }
  }
  for (const c of created) {
    const f = ctx.ckpt.files.get(c.id)!;
    const kind = kindOfType(f.type)!;
    kind.finish?.(ctx, tr, f[kind.field], c.fd);
  }
}

/** The task came from the stub: drop the fds it inherited, before any of ours exist. */
export function closeInherited(_ctx: RestoreCtx, tr: TaskRestore): void {
  tr.task.call('close_range', 0, 0xffffffff, 0);
}

/** Close the fds parked while files were restored (once every process has its fds). */
export function closeParked(ctx: RestoreCtx, tr: TaskRestore): void {
  for (const p of ctx.parked) if (p.pid === tr.img.pid) tr.task.call('close', p.fd);
}
