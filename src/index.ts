// The library: checkpoint and restore from a Node.js program.
//
// Dump and restore run in a child process (stasis's own CLI, with --json):
// they trace other processes, which blocks the thread that does it and makes
// the process a child subreaper for the duration; the caller's event loop
// and process stay as they were.
import { childProcess, nodeChildEnv } from './node-lazy';
import * as path from 'node:path';
import { StasisError, ErrorCodes } from './errors';
import { readCheckpoint as readCheckpointSync, type ShownCheckpoint } from './show';
import { checkFeatures, type Feature } from './check';
import { checkImages as checkImagesSync, type ImagesReport } from './images/digest';
import { lockForReading } from './images/dir';
import type { DumpResult } from './dump/dump';
import type { RestoreResult as RestoreDone } from './restore/restore';

export { StasisError, ErrorCodes } from './errors';
export type { ShownCheckpoint, ShownProcess, ShownVma, ShownFd, ShownThread } from './show';
export type { Feature } from './check';
export type { ImagesReport, FileCheck } from './images/digest';
export type { Msg, MsgName } from './images/schema';

const BIN = path.resolve(__dirname, '..', '..', 'bin', 'stasis.js');

export interface CommonOptions {
  /** A log of every step (relative: inside the images directory). */
  logFile?: string;
  /** 0-4, as criu's -v; 3 logs every step with its time. */
  verbosity?: 0 | 1 | 2 | 3 | 4;
}

export interface DumpOptions extends CommonOptions {
  pid: number;
  imagesDir: string;
  /** Let the tree go on (default: it is killed once the checkpoint is complete). */
  leaveRunning?: boolean;
  tcpEstablished?: boolean;
  /** criu's --tcp-close: connections dumped as sockets only, restored closed (restore with tcpClose too). */
  tcpClose?: boolean;
  /** How established TCP connections are kept silent until their restore (default: nftables, else iptables). */
  networkLock?: 'nftables' | 'iptables' | 'skip';
  fileLocks?: boolean;
  shellJob?: boolean;
  extUnixSk?: boolean;
  /** Largest deleted-but-open file put in the images, in bytes. */
  ghostLimit?: number;
  /** criu's --external: `mnt[MOUNTPOINT]:KEY` (a mount not carried), `net[INODE]:KEY` (a network namespace not carried). */
  external?: string[];
}

export type { DumpResult };

export interface RestoreOptions extends CommonOptions {
  imagesDir: string;
  /**
   * true (default): resolve once the tree runs. false: resolve when the
   * restored root exits, with its status (`onRestored` tells its pid first).
   */
  detached?: boolean;
  onRestored?: (r: RestoreResult) => void;
  skipFileCheck?: boolean;
  shellJob?: boolean;
  fileLocks?: boolean;
  /** criu's --tcp-close: TCP connections come back closed. */
  tcpClose?: boolean;
  /** As criu: ignored (with a warning) when it differs from the dump's; the dump's lock is removed. */
  networkLock?: 'nftables' | 'iptables' | 'skip';
  pidfile?: string;
  /** Check every image against the checkpoint's digest first (default true; false: criu --no-verify). */
  verify?: boolean;
  /** The tree's root directory here (criu --root). */
  root?: string;
  /** criu's --external `mnt[KEY]:PATH`: where a mount dumped as external KEY is bound from. */
  external?: string[];
  /** criu's --join-ns `net:PATH`: the tree joins this network namespace. */
  joinNs?: string[];
  /** What may be done to cgroups (criu --manage-cgroups). */
  manageCgroups?: 'soft' | 'full' | 'strict' | 'props' | 'none' | 'ignore';
}

export interface RestoreResult extends RestoreDone {
  /** Not detached: how the restored root ended. */
  exit?: { code?: number; signal?: number };
}

function common(o: CommonOptions): string[] {
  return [...(o.logFile ? ['-o', o.logFile] : []), ...(o.verbosity !== undefined ? [`-v${o.verbosity}`] : [])];
}

/** Run the CLI with --json; each JSON line goes to `onLine`; resolves with the exit status. */
function runCli(args: string[], onLine: (o: Record<string, unknown>) => void): Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = childProcess().spawn(process.execPath, [BIN, ...args, '--json'], { stdio: ['ignore', 'pipe', 'pipe'], env: nodeChildEnv() });
    let out = '', err = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      for (let i = out.indexOf('\n'); i >= 0; i = out.indexOf('\n')) {
        const line = out.slice(0, i);
        out = out.slice(i + 1);
        if (line.trim()) onLine(JSON.parse(line) as Record<string, unknown>);
      }
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => { err += d; });
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stderr: err }));
  });
}

function failure(first: Record<string, unknown> | undefined, stderr: string): StasisError {
  const e = first?.error as { code?: string; message?: string } | undefined;
  if (e?.message) return new StasisError(e.code ?? ErrorCodes.INTERNAL, e.message);
  return new StasisError(ErrorCodes.INTERNAL, stderr.trim().split('\n').pop() ?? 'stasis failed');
}

/** Checkpoint process `pid` and its descendants into `imagesDir`. */
export async function dump(o: DumpOptions): Promise<DumpResult> {
  const args = ['dump', '-t', String(o.pid), '-D', o.imagesDir, ...common(o)];
  if (o.leaveRunning) args.push('-R');
  if (o.tcpEstablished) args.push('--tcp-established');
  if (o.tcpClose) args.push('--tcp-close');
  if (o.networkLock) args.push('--network-lock', o.networkLock);
  if (o.fileLocks) args.push('--file-locks');
  if (o.shellJob) args.push('-j');
  if (o.extUnixSk) args.push('--ext-unix-sk');
  if (o.ghostLimit !== undefined) args.push('--ghost-limit', String(o.ghostLimit));
  for (const e of o.external ?? []) args.push('--external', e);
  let first: Record<string, unknown> | undefined;
  const r = await runCli(args, (line) => { first ??= line; });
  if (r.code !== 0 || !first || first.error) throw failure(first, r.stderr);
  return first as unknown as DumpResult;
}

/** Bring a checkpoint back. */
export async function restore(o: RestoreOptions): Promise<RestoreResult> {
  const detached = o.detached ?? true;
  const args = ['restore', '-D', o.imagesDir, ...common(o)];
  if (detached) args.push('-d');
  if (o.skipFileCheck) args.push('--skip-file-check');
  if (o.shellJob) args.push('-j');
  if (o.fileLocks) args.push('--file-locks');
  if (o.tcpClose) args.push('--tcp-close');
  if (o.networkLock) args.push('--network-lock', o.networkLock);
  if (o.pidfile) args.push('--pidfile', o.pidfile);
  if (o.verify === false) args.push('--no-verify');
  if (o.root) args.push('--root', o.root);
  for (const e of o.external ?? []) args.push('--external', e);
  for (const j of o.joinNs ?? []) args.push('--join-ns', j);
  if (o.manageCgroups) args.push('--manage-cgroups', o.manageCgroups);
  let first: Record<string, unknown> | undefined;
  let exit: RestoreResult['exit'];
  const r = await runCli(args, (line) => {
    if (first) {
      if (line.exit) exit = line.exit as RestoreResult['exit'];
      return;
    }
    first = line;
    if (!line.error) o.onRestored?.(line as unknown as RestoreResult);
  });
  if (!first || first.error) throw failure(first, r.stderr);
  const res = first as unknown as RestoreResult;
  if (detached && r.code !== 0) throw failure(undefined, r.stderr);
  if (!detached && !exit) throw failure(undefined, r.stderr);
  return detached ? res : { ...res, exit };
}

/** Check every file of a checkpoint against its digest (what `stasis check-images` does). */
export async function checkImages(imagesDir: string): Promise<ImagesReport> {
  const lock = lockForReading(imagesDir, 'check');
  try { return checkImagesSync(imagesDir); } finally { lock.close(); }
}

/** Which kernel features stasis needs are present here. */
export async function check(): Promise<Feature[]> {
  return checkFeatures();
}

/** What a checkpoint holds (what `stasis show` prints), typed. */
export async function readCheckpoint(dir: string): Promise<ShownCheckpoint> {
  return readCheckpointSync(dir);
}
