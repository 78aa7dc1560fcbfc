// `criu swrk FD`: serve one request (VERSION, FEATURE_CHECK and CHECK may
// ask to keep the connection open for more) the way runc, podman, CRI-O and
// containerd expect of criu: a DUMP or RESTORE runs stasis's own dump() or
// restore() in this process, with a notification round trip at each point
// the caller acts on. Nothing is ever written to stdout or stderr: on a
// restore they are the container's (runc hands them over), so the log goes
// into the work directory (log_file).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { StasisError, ErrorCodes, SyscallError } from '../errors';
import { enumValues, type Msg } from '../images/schema';
import { dump } from '../dump/dump';
import { preDump } from '../dump/predump';
import { restore } from '../restore/restore';
import { checkFeatures, memTrackProbe } from '../check';
import { openLog, closeLog, setLogLevel, log } from '../log';
import type { NotifyHook } from '../unit/dump-ctx';
import { RpcChannel } from './channel';
import { screen, dumpOptions, restoreOptions, optionError, type CriuOpts, type Dirs } from './options';
import { checkRestoreOptions } from './restore-checks';
import { writeDumpStats, writeRestoreStats } from './stats';

const T = enumValues('criu_req_type');
type Req = Msg<'criu_req'>;
type Resp = Msg<'criu_resp'>;

/** The criu release whose protocol and behaviour we follow (runc and podman gate features on it). */
export const CRIU_VERSION = { major: 4, minor: 2 } as const;
/** Requests criu serves again on the same connection when asked to keep it open. */
const KEEP_OPEN = new Set<number>([T.VERSION, T.FEATURE_CHECK, T.CHECK]);
const EBADRQC = 56;

export function typeName(t: number): string {
  return Object.entries(T).find(([, v]) => v === t)?.[0] ?? `type ${t}`;
}

/** A directory the caller gave by fd: /proc/CALLER/fd/N (its fd, not ours), kept open here. */
function callerDir(peer: number, fd: number, field: string): string {
  const p = `/proc/${peer}/fd/${fd}`;
  let ours: number;
  try {
    ours = fs.openSync(p, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
  } catch (e) {
    throw optionError(field, `${fd}: not a directory open in the caller (pid ${peer}): ${(e as NodeJS.ErrnoException).code}`);
  }
  // The path (for messages and the log) when it still leads to that directory.
  try {
    const link = fs.readlinkSync(p);
    const a = fs.fstatSync(ours), b = fs.statSync(link);
    if (link.startsWith('/') && a.dev === b.dev && a.ino === b.ino) return link;
  } catch { /* renamed, deleted, elsewhere: our fd still reaches it */ }
  return `/proc/self/fd/${ours}`;
}

function dirs(peer: number, o: CriuOpts): Dirs {
  let imagesDir: string;
  if (o.images_dir_fd >= 0) imagesDir = callerDir(peer, o.images_dir_fd, 'images_dir_fd');
  else if (o.images_dir) imagesDir = o.images_dir;
  else throw optionError('images_dir_fd', 'no images directory given (images_dir_fd or images_dir)');
  const workDir = o.work_dir_fd !== undefined && o.work_dir_fd >= 0 ? callerDir(peer, o.work_dir_fd, 'work_dir_fd') : imagesDir;
  return { imagesDir, workDir };
}

/** criu's log: log_file in the work directory, at log_level (criu's levels, 0-4). */
function startLog(o: CriuOpts, d: Dirs): void {
  const level = o.log_level ?? 2;
  setLogLevel(level);
  if (!o.log_file || o.log_file.includes('/') || level < 0 || level > 4) return; // refused by screen()
  const file = path.join(d.workDir, o.log_file);
  try {
    openLog(file, level);
  } catch (e) {
    throw new StasisError(ErrorCodes.IO_ERROR, `cannot open log file ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}

/** A notification round trip: criu_resp NOTIFY out, the client's NOTIFY with notify_success back. */
export function notifier(ch: RpcChannel, enabled: boolean): NotifyHook {
  return (script, pid, fd) => {
    if (!enabled) return;
    log.info(`notify ${script}${pid !== undefined ? ` (pid ${pid})` : ''}`);
    ch.send({ type: T.NOTIFY, success: true, notify: { script, ...(pid !== undefined ? { pid } : {}) } }, fd);
    const ack = ch.recv();
    if (!ack) throw new StasisError(ErrorCodes.RPC, `the client closed the connection at notification ${script}`);
    if (ack.type !== T.NOTIFY) throw new StasisError(ErrorCodes.RPC, `the client answered notification ${script} with a ${typeName(ack.type)} request`);
    if (ack.notify_success !== true) throw new StasisError(ErrorCodes.RPC, `the client reported a failure at notification ${script}`);
  };
}

function needOpts(req: Req): CriuOpts {
  if (!req.opts) throw new StasisError(ErrorCodes.RPC, `${typeName(req.type)} request without opts`);
  return req.opts;
}

/** The statistics file: done is done (the tree is gone or running by now), so a failure is only logged. */
function stats(write: () => void): void {
  try { write(); } catch (e) { log.warn(`statistics not written: ${(e as Error).message}`); }
}

function doDump(ch: RpcChannel, req: Req): Resp {
  const o = needOpts(req);
  const d = dirs(ch.peer, o);
  startLog(o, d);
  log.info(`criu swrk (stasis): DUMP for pid ${ch.peer}`);
  const notes = screen(o, 'dump');
  const { pid, ...opts } = dumpOptions(o, d, notes);
  for (const n of notes) log.info(n);
  log.info(`external mounts: ${opts.external?.join(' ') ?? 'none'}`);
  const r = dump(pid, { ...opts, notify: notifier(ch, o.notify_scripts === true) });
  stats(() => writeDumpStats(d.workDir, r));
  log.info(`dumped pid ${r.pid}: ${r.processes} process(es), ${r.pages} pages; ${opts.leaveRunning ? 'left running' : 'killed'}`);
  return { type: T.DUMP, success: true, dump: { restored: false } };
}

/** criu's pre-dump: memory copied while the tree runs, its changes tracked from then on (runc --pre-dump). */
function doPreDump(ch: RpcChannel, req: Req): Resp {
  const o = needOpts(req);
  const d = dirs(ch.peer, o);
  startLog(o, d);
  log.info(`criu swrk (stasis): ${typeName(req.type)} for pid ${ch.peer}`);
  const notes = screen(o, 'dump');
  const { pid, leaveRunning, ...opts } = dumpOptions(o, d, notes);
  void leaveRunning; // a pre-dump always leaves the tree running
  for (const n of notes) log.info(n);
  const r = preDump(pid, opts);
  stats(() => writeDumpStats(d.workDir, r));
  log.info(`pre-dumped pid ${r.pid}: ${r.pages} pages, frozen ${r.frozenMs.toFixed(1)} ms`);
  return { type: req.type, success: true };
}

function doRestore(ch: RpcChannel, req: Req): Resp {
  const o = needOpts(req);
  const d = dirs(ch.peer, o);
  startLog(o, d);
  log.info(`criu swrk (stasis): RESTORE for pid ${ch.peer}`);
  for (const n of screen(o, 'restore')) log.info(n);
  const { notes, inheritFd } = checkRestoreOptions(o, d.imagesDir);
  for (const n of notes) log.info(n);
  const ro = { ...restoreOptions(o, d), inheritFd };
  log.info(`external mounts: ${ro.external?.join(' ') ?? 'none'}`);
  const r = restore({ ...ro, notify: notifier(ch, o.notify_scripts === true) });
  for (const w of r.warnings) log.warn(w);
  stats(() => writeRestoreStats(d.workDir, r));
  log.info(`restored pid ${r.pid} (${r.processes} process(es)); it is re-parented to the caller's subreaper when we exit`);
  return { type: T.RESTORE, success: true, restore: { pid: r.pid } };
}

function features(req: Req): Resp {
  // Asked or not, every feature is answered (as criu); none of these is stasis's.
  void req;
  return { type: T.FEATURE_CHECK, success: true, features: { mem_track: memTrackProbe() === true, lazy_pages: false, pidfd_store: false } };
}

function check(): Resp {
  const missing = checkFeatures().filter((f) => f.needed && !f.ok);
  if (!missing.length) return { type: T.CHECK, success: true };
  return { type: T.CHECK, success: false, cr_errmsg: `stasis: missing: ${missing.map((f) => `${f.name} (${f.detail})`).join('; ')}` };
}

function unsupported(req: Req, why: string): never {
  throw new StasisError(ErrorCodes.UNSUPPORTED, `${typeName(req.type)} requests are not supported: ${why}`);
}

function handle(ch: RpcChannel, req: Req): Resp {
  switch (req.type) {
    case T.VERSION: return { type: T.VERSION, success: true, version: { major_number: CRIU_VERSION.major, minor_number: CRIU_VERSION.minor } };
    case T.FEATURE_CHECK: return features(req);
    case T.CHECK: return check();
    case T.DUMP: return doDump(ch, req);
    case T.RESTORE: return doRestore(ch, req);
    case T.PRE_DUMP: case T.SINGLE_PRE_DUMP: return doPreDump(ch, req);
    case T.NOTIFY: return unsupported(req, 'a NOTIFY answers a notification, and none was sent');
    case T.PAGE_SERVER: case T.PAGE_SERVER_CHLD: return unsupported(req, 'stasis has no page server');
    case T.CPUINFO_DUMP: case T.CPUINFO_CHECK: return unsupported(req, 'stasis keeps no cpuinfo image');
    case T.WAIT_PID: return unsupported(req, 'stasis restores no process of the caller\'s to wait for');
    case T.EMPTY: throw new StasisError(ErrorCodes.RPC, 'an EMPTY request asks for nothing');
    default: throw new StasisError(ErrorCodes.RPC, `unknown request type ${req.type}`);
  }
}

/** The failure response: the request's type (EMPTY if unknown), stasis's one-line error. */
function failure(type: number | undefined, e: unknown): Resp {
  const known = type !== undefined && Object.values(T).includes(type as never) && type !== T.EMPTY;
  const msg = e instanceof StasisError ? e.message : `internal error: ${(e as Error)?.message ?? e} (a bug)`;
  const errno = e instanceof SyscallError ? e.errno : e instanceof StasisError && e.code === ErrorCodes.UNSUPPORTED && e.message.startsWith('criu option') ? EBADRQC : undefined;
  const resp: Resp = { type: known ? type! : T.EMPTY, success: false, cr_errmsg: `stasis: ${msg}`, ...(errno !== undefined ? { cr_errno: errno } : {}) };
  if (type === T.DUMP) resp.dump = { restored: false };
  if (type === T.RESTORE) resp.restore = { pid: -1 };
  return resp;
}

/** Serve the socket at `fd`; the exit status: 0 after a successful last response. */
export function serve(fd: number): number {
  const ch = new RpcChannel(fd);
  let served = false;
  for (;;) {
    let req: Req | undefined;
    try {
      req = ch.recv();
    } catch (e) {
      // A malformed packet is answered; a broken socket cannot be.
      log.error((e as Error).message);
      try { ch.send(failure(undefined, e)); } catch { /* gone */ }
      return 1;
    }
    if (!req) {
      // After a request kept open, closing is how the client says it is done.
      if (served) return 0;
      log.error('the client closed the connection without a request');
      return 1;
    }
    served = true;
    let resp: Resp;
    try {
      resp = handle(ch, req);
    } catch (e) {
      log.error(e instanceof StasisError ? e.message : `internal error: ${(e as Error)?.stack ?? e}`);
      resp = failure(req.type, e);
    }
    try {
      ch.send(resp);
    } catch (e) {
      log.error(`cannot send the ${typeName(resp.type)} response: ${(e as Error).message}`);
      return 1;
    } finally {
      closeLog();
    }
    if (!resp.success) return 1;
    if (!(req.keep_open && KEEP_OPEN.has(req.type))) return 0;
  }
}
