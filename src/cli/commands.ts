// The commands: each declares its options (criu's names where criu has them)
// and maps them onto the library's functions. A command loads what it runs
// when it runs (lazy require): `stasis --help` or `show` never load ptrace,
// koffi or the resource units, and a dump never loads the show code.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { StasisError, ErrorCodes } from '../errors';
import type { DumpResult } from '../dump/dump';
import type { RestoreResult } from '../restore/restore';
import type { ImagesReport } from '../images/digest';
import { DIGEST_FILE } from '../images/digest-name';
import { openLog, closeLog, setLogLevel, log } from '../log';
import { withProgress } from '../progress';
import { say } from './out';
import { LOGGING, usageError, type CommandSpec, type OptionSpec, type Values } from './options';
import type { CgroupMode } from '../resources/ns/cgroup';
import { PAGE_SERVER_OPTIONS, pageServerOf, lazySourceOf, lazyRemoteOf, pageServerCmd, migrateCmd, migrateReceiveCmd } from './transfer';

/** Milliseconds spent loading the modules of the command run (for --timings). */
export const loading = { ms: 0 };

/** require() of a command's module, timed into `loading`. */
function lazy<T>(load: () => T): T {
  const s = process.hrtime.bigint();
  try {
    return load();
  } finally {
    loading.ms += Number(process.hrtime.bigint() - s) / 1e6;
  }
}
const mod = {
  dump: () => lazy(() => require('../dump/dump') as typeof import('../dump/dump')),
  restore: () => lazy(() => require('../restore/restore') as typeof import('../restore/restore')),
  tree: () => lazy(() => require('../restore/tree') as typeof import('../restore/tree')),
  dir: () => lazy(() => require('../images/dir') as typeof import('../images/dir')),
  digest: () => lazy(() => require('../images/digest') as typeof import('../images/digest')),
  show: () => lazy(() => require('../show') as typeof import('../show')),
  check: () => lazy(() => require('../check') as typeof import('../check')),
  demo: () => lazy(() => require('../demo') as typeof import('../demo')),
  netlock: () => lazy(() => require('../resources/netlock') as typeof import('../resources/netlock')),
  predump: () => lazy(() => require('../dump/predump') as typeof import('../dump/predump')),
  precopy: () => lazy(() => require('../dump/precopy') as typeof import('../dump/precopy')),
  chain: () => lazy(() => require('../images/chain') as typeof import('../images/chain')),
  sys: () => lazy(() => require('../sys') as typeof import('../sys')),
  handover: () => lazy(() => require('../restore/lazy-handover') as typeof import('../restore/lazy-handover')),
};

/** The width of the terminal stderr is, for a progress line; undefined when it is none or with --json. */
function progressColumns(v: Values): number | undefined {
  return flag(v, 'json') ? undefined : mod.sys().terminalColumns(2);
}

export interface Command extends CommandSpec {
  run(values: Values, positionals: string[]): number | Promise<number>;
}

function str(v: Values, k: string): string | undefined { return v[k] as string | undefined; }
function flag(v: Values, k: string): boolean { return v[k] === true; }
function list(v: Values, k: string): string[] { return (v[k] as string[] | undefined) ?? []; }

const TIMINGS: OptionSpec = { long: 'timings', type: 'flag', help: 'print the milliseconds spent in each step (start-up included) on stderr; --json always has them' };

const LOCK_METHODS = ['nftables', 'iptables', 'skip'] as const;
function networkLock(v: Values): (typeof LOCK_METHODS)[number] | undefined {
  const m = str(v, 'network-lock');
  if (m !== undefined && !(LOCK_METHODS as readonly string[]).includes(m)) usageError(`invalid --network-lock '${m}' (nftables, iptables or skip)`);
  return m as (typeof LOCK_METHODS)[number] | undefined;
}

/** -o FILE: relative names resolve in the images directory, as criu's. */
function startLog(values: Values, dir: string | undefined, mkdir: boolean): void {
  const verbosity = (values.verbosity as number | undefined) ?? 2;
  if (verbosity > 4) usageError(`invalid verbosity ${verbosity} (0-4)`);
  setLogLevel(verbosity);
  const file = str(values, 'log-file');
  if (!file) return;
  const at = path.isAbsolute(file) || !dir ? file : path.join(dir, file);
  if (mkdir && dir && !fs.existsSync(dir)) fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  try {
    openLog(at, verbosity);
  } catch (e) {
    throw new StasisError(ErrorCodes.IO_ERROR, `cannot open log file ${at}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  log.info(`stasis ${process.argv.slice(2).join(' ')}`);
}

/** Milliseconds from the start of this process to the command's first step (set by main). */
export const started = { ms: 0 };

/**
 * The result's timings with this process's own start-up in front: node and
 * stasis's command line until the command began ('start-up'), then the
 * modules of the command ('modules'), then the library's steps.
 */
function withStartup(t: Record<string, number>): Record<string, number> {
  return { 'start-up': started.ms, modules: loading.ms, ...t };
}

/** --timings: one line per step, parts indented under their step. */
export function formatTimings(what: string, t: Record<string, number>, ms: number, remoteCalls: number, remoteStops: number): string {
  const lines = [`${what} timings (ms):`];
  for (const [k, v] of Object.entries(t)) {
    const part = k.includes('.');
    lines.push(`  ${part ? `  ${k.slice(k.indexOf('.') + 1)}` : k}`.padEnd(34) + v.toFixed(1).padStart(9));
  }
  lines.push(`  ${`${what} (start-up not included)`.padEnd(32)}${ms.toFixed(1).padStart(9)}   remote syscalls: ${remoteCalls} in ${remoteStops} stops`);
  return lines.join('\n');
}

function printJson(o: unknown): void {
  say(1, JSON.stringify(o));
}

const MiB = (n: number) => (n / 1048576).toFixed(1);

export function dumpSummary(r: DumpResult, leaveRunning: boolean): string {
  return `dumped pid ${r.pid} (${r.processes} process${r.processes > 1 ? 'es' : ''}, ${r.threads} thread${r.threads > 1 ? 's' : ''}): ` +
    `${r.pages} pages (${MiB(r.bytes)} MiB) in ${r.ms.toFixed(1)} ms, frozen ${r.frozenMs.toFixed(1)} ms; ` +
    `images ${MiB(r.imagesBytes)} MiB; ${leaveRunning ? 'left running' : 'killed'}`;
}

export function restoreSummary(r: Pick<RestoreResult, 'pid' | 'processes' | 'ms'>): string {
  return `restored pid ${r.pid}${r.processes > 1 ? ` and ${r.processes - 1} descendant(s)` : ''} in ${r.ms.toFixed(1)} ms`;
}

/** Bytes of the checkpoint's files (its .img files and stasis-* files: digest, tracking, pin), for the final line. */
function imagesSize(dir: string): number {
  let n = 0;
  try {
    for (const f of fs.readdirSync(dir)) {
      if (!f.endsWith('.img') && !f.startsWith('stasis-')) continue;
      const st = fs.lstatSync(path.join(dir, f));
      if (st.isFile()) n += st.size;
    }
  } catch { /* the line is informative only */ }
  return n;
}

const INCREMENTAL: OptionSpec[] = [
  { long: 'prev-images-dir', type: 'string', arg: 'DIR', help: 'the previous pre-dump or dump (relative to -D, as in criu): pages unchanged since are referred to it (a `parent` link), not copied' },
];

/** -t PID and -D DIR of dump and pre-dump, checked; the log started in DIR. */
function treeAndDir(v: Values, cmd: string): { pid: number; dir: string } {
  const pid = v.tree as number | undefined;
  const dir = str(v, 'images-dir');
  if (pid === undefined) usageError(`${cmd} needs -t PID`);
  if (!dir) usageError(`${cmd} needs -D DIR`);
  if (pid <= 0) usageError(`invalid pid '${pid}'`);
  startLog(v, dir, true);
  return { pid, dir };
}

const dumpCmd: Command = {
  name: 'dump',
  usage: 'stasis dump -t PID -D DIR [options]',
  summary: 'Checkpoint process PID and its descendants into DIR, then kill them (or leave them running with -R).',
  options: [
    { long: 'tree', short: 't', type: 'int', arg: 'PID', what: 'pid', help: 'the root of the tree to dump' },
    { long: 'images-dir', short: 'D', type: 'string', arg: 'DIR', help: 'where to write the images (created 0700)' },
    { long: 'leave-running', short: 'R', type: 'flag', help: 'let the tree go on after the dump (default: kill it)' },
    { long: 'tcp-established', type: 'flag', help: 'take established TCP connections (TCP_REPAIR)' },
    { long: 'tcp-close', type: 'flag', help: 'TCP connections (any state) are dumped as sockets only, to be restored closed (restore with --tcp-close too); criu\'s' },
    { long: 'network-lock', type: 'string', arg: 'METHOD', help: 'nftables, iptables or skip: how those connections are kept silent until their restore (default: nftables, else iptables)' },
    { long: 'file-locks', type: 'flag', help: 'accepted for criu\'s sake: file locks (POSIX, OFD, flock, leases) are always taken' },
    { long: 'ghost-limit', type: 'size', arg: 'SIZE', help: 'most data of one deleted-but-open file to put in the images (default 1M; K, M, G suffixes; holes of a sparse file do not count)' },
    { long: 'ghost-fiemap', type: 'flag', help: 'accepted for criu compatibility: a deleted file\'s data extents are always found with SEEK_DATA/SEEK_HOLE' },
    { long: 'no-ghost-fiemap', type: 'flag', help: 'accepted for criu compatibility (as --ghost-fiemap)' },
    { long: 'shell-job', short: 'j', type: 'flag', help: 'the tree runs on the shell\'s terminal (restore with -j too)' },
    { long: 'ext-unix-sk', type: 'flag', help: 'unix datagram sockets connected outside the tree: connect to the peer\'s name again on restore' },
    { long: 'external', type: 'string', multiple: true, arg: 'mnt[MOUNTPOINT]:KEY|net[INODE]:KEY', help: 'not carried, named KEY for the restore: a mount of the tree\'s mount namespace (bound from what KEY is mapped to), or its network namespace (joined)' },
    { long: 'manage-cgroups', type: 'string', arg: 'MODE', help: 'accepted for criu\'s sake (the mode is checked): the cgroups of the tree are always dumped, with their properties; the mode matters at restore' },
    { long: 'force-irmap', type: 'flag', help: 'accepted for criu\'s sake: inotify watches are always resolved (by file handle)' },
    { long: 'irmap-scan-path', type: 'string', multiple: true, arg: 'DIR', help: 'accepted for criu\'s sake (see --force-irmap)' },
    ...INCREMENTAL,
    { long: 'track-mem', type: 'flag', help: 'with -R: keep tracking memory changes, for a next dump or pre-dump made on this one' },
    { long: 'pre-copy', type: 'flag', help: 'with --prev-images-dir naming a pre-dump: copy what changed since in one more round while the tree runs (into DIR/stasis-precopy.*, the chain\'s next link), then only what changed during that round with the tree frozen' },
    ...PAGE_SERVER_OPTIONS,
    { long: 'lazy-pages', type: 'flag', help: 'post-copy: leave private anonymous pages out of the images and serve them from the frozen tree on --address/--port to `restore --lazy-pages --page-server`; the tree is killed once the restorer has them all, let go if the transfer fails' },
    TIMINGS,
    ...LOGGING,
  ],
  run(v) {
    const { pid, dir } = treeAndDir(v, 'dump');
    cgroupMode(str(v, 'manage-cgroups'));
    const lazy = lazySourceOf(v);
    const lazyPages = lazy && {
      ...lazy,
      onListening: (port: number) => say(2, `stasis dump: lazy pages served on ${lazy.address}:${port}`),
      onConnected: (peer: string) => log.info(`lazy pages: restorer ${peer} connected`),
    };
    const r = withProgress('dump', progressColumns(v), () => mod.precopy().dumpWithPreCopy(pid, {
      dir, leaveRunning: flag(v, 'leave-running'), tcpEstablished: flag(v, 'tcp-established'), tcpClose: flag(v, 'tcp-close'), fileLocks: flag(v, 'file-locks'),
      ghostLimit: v['ghost-limit'] as number | undefined, shellJob: flag(v, 'shell-job'), extUnixSk: flag(v, 'ext-unix-sk'),
      external: list(v, 'external'), networkLock: networkLock(v), failAt: process.env.STASIS_FAIL_AT || undefined,
      prevImagesDir: str(v, 'prev-images-dir'), trackMem: flag(v, 'track-mem'), preCopy: flag(v, 'pre-copy'), pageServer: pageServerOf(v), lazyPages,
    }));
    log.info(dumpSummary(r, flag(v, 'leave-running')));
    const timings = withStartup(r.timings);
    if (flag(v, 'json')) printJson({ ...r, timings });
    else {
      if (flag(v, 'timings')) say(2, formatTimings('dump', timings, r.ms, r.remoteCalls, r.remoteStops));
      say(2, dumpSummary(r, flag(v, 'leave-running')));
    }
    return 0;
  },
};

const preDumpCmd: Command = {
  name: 'pre-dump',
  usage: 'stasis pre-dump -t PID -D DIR [--prev-images-dir DIR]',
  summary: 'Copy the memory of process PID and its descendants into DIR while they run (frozen only briefly), and track their writes from then on, for a dump made on it (--prev-images-dir) to copy only what changed.',
  options: [
    { long: 'tree', short: 't', type: 'int', arg: 'PID', what: 'pid', help: 'the root of the tree' },
    { long: 'images-dir', short: 'D', type: 'string', arg: 'DIR', help: 'where to write the images (created 0700)' },
    ...INCREMENTAL,
    { long: 'track-mem', type: 'flag', help: 'accepted for criu compatibility: a pre-dump always tracks memory changes' },
    ...PAGE_SERVER_OPTIONS,
    ...LOGGING,
  ],
  run(v) {
    const { pid, dir } = treeAndDir(v, 'pre-dump');
    const r = withProgress('pre-dump', progressColumns(v), () => mod.predump().preDump(pid, { dir, prevImagesDir: str(v, 'prev-images-dir'), failAt: process.env.STASIS_FAIL_AT || undefined, pageServer: pageServerOf(v) }));
    const line = dumpSummary(r, true).replace(/^dumped/, 'pre-dumped');
    log.info(line);
    if (flag(v, 'json')) printJson(r);
    else say(2, line);
    return 0;
  },
};

function cgroupMode(v: string | undefined): CgroupMode | undefined {
  if (v === undefined) return undefined;
  if (!['none', 'props', 'soft', 'full', 'strict', 'ignore'].includes(v)) usageError(`invalid --manage-cgroups mode '${v}' (none, props, soft, full, strict, ignore)`);
  return v as CgroupMode;
}

const restoreCmd: Command = {
  name: 'restore',
  usage: 'stasis restore -D DIR [-d] [options]',
  summary: 'Bring a dumped tree back from DIR, with its pids. Without -d, wait for it as its parent and exit with its status.',
  options: [
    { long: 'images-dir', short: 'D', type: 'string', arg: 'DIR', help: 'the checkpoint' },
    { long: 'restore-detached', short: 'd', type: 'flag', help: 'leave the tree running and exit 0' },
    { long: 'pidfile', type: 'string', arg: 'FILE', help: 'write the pid of the restored root to FILE' },
    { long: 'skip-file-check', type: 'flag', help: 'restore even if a file changed size since the dump' },
    { long: 'shell-job', short: 'j', type: 'flag', help: 'give terminal fds stasis\'s own terminal' },
    { long: 'tcp-established', type: 'flag', help: 'accepted for criu compatibility: connections in the images are always restored' },
    { long: 'network-lock', type: 'string', arg: 'METHOD', help: 'accepted for criu compatibility: the dump\'s network lock is the one removed' },
    { long: 'file-locks', type: 'flag', help: 'accepted for criu\'s sake: the file locks of the images are always taken again' },
    { long: 'ext-unix-sk', type: 'flag', help: 'accepted for criu compatibility (external peers are in the images)' },
    { long: 'allow-foreign-images', type: 'flag', help: 'trust image files owned by other users' },
    { long: 'tcp-close', type: 'flag', help: 'TCP connections of the images come back closed (shut both ways, not connected), as criu\'s' },
    { long: 'manage-cgroups', type: 'string', arg: 'MODE', help: 'cgroups: soft (default: make missing ones, their limits too), full, strict, props, none, ignore (criu\'s modes)' },
    { long: 'force-irmap', type: 'flag', help: 'accepted for criu\'s sake (a dump option there too): changes nothing at restore' },
    { long: 'irmap-scan-path', type: 'string', multiple: true, arg: 'DIR', help: 'accepted for criu\'s sake (see --force-irmap)' },
    { long: 'root', type: 'string', arg: 'DIR', help: 'the tree\'s root directory here: its mount namespace\'s root is bound from DIR (default: found among our mounts)' },
    { long: 'external', type: 'string', multiple: true, arg: 'mnt[KEY]:PATH', help: 'bind the mount dumped as external KEY from PATH' },
    { long: 'inherit-fd', type: 'string', multiple: true, arg: 'fd[N]:KEY', help: 'our fd N is what the images name KEY: a network namespace dumped as external, or a pipe (pipe:[INODE]) given to the tree in its place, as criu' },
    { long: 'join-ns', type: 'string', multiple: true, arg: 'net:PATH|net:PID', help: 'restore the tree into this existing network namespace' },
    { long: 'no-verify', type: 'flag', help: `do not check the images against their digest (${DIGEST_FILE}) first (images made by criu have none)` },
    { long: 'lazy-pages', type: 'flag', help: 'let the tree run before its private memory is in: pages are copied on first touch (userfaultfd) and streamed in meanwhile; stasis serves them until all are in (with -d, from a detached process that exits then)' },
    { long: 'page-server', type: 'flag', help: 'with --lazy-pages: post-copy, the pages the images leave out are fetched from `dump --lazy-pages` at --address/--port' },
    { long: 'address', type: 'string', arg: 'ADDR', help: 'with --page-server: the dump\'s numeric IP address' },
    { long: 'port', type: 'int', arg: 'PORT', help: 'with --page-server: the dump\'s port' },
    TIMINGS,
    ...LOGGING,
  ],
  run(v) {
    const dir = str(v, 'images-dir');
    if (!dir) usageError('restore needs -D DIR');
    const lazy = flag(v, 'lazy-pages');
    const heirFd = process.env[HEIR_ENV];
    if (heirFd !== undefined) return mod.handover().runHeir(Number(heirFd), process.env.STASIS_LAZY_HOLD, flag(v, 'allow-foreign-images'), !flag(v, 'no-verify'));
    // -d --lazy-pages: the process that serves once we return starts now, and loads while we restore.
    const heir = lazy && flag(v, 'restore-detached') ? mod.handover().spawnHeir(HEIR_ENV) : undefined;
    startLog(v, dir, false);
    let r: RestoreResult;
    try {
      r = withProgress('restore', progressColumns(v), () => restoreFrom(v, dir, lazy));
    } catch (e) {
      if (heir) mod.handover().dismissHeir(heir);
      throw e;
    }
    if (heir) {
      // The tree runs, served by us until the heir takes over (restore/lazy-handover.ts); then we return.
      reportRestored(v, dir, { ...r, lazy: { ...r.lazy!.toJSON(), server: heir.pid } }, true);
      mod.handover().serveUntilHeir(r.lazy!, heir, process.env.STASIS_LAZY_HOLD);
      closeLog();
      return 0;
    }
    reportRestored(v, dir, { ...r, lazy: r.lazy?.toJSON() });
    r.lazy?.serve(process.env.STASIS_LAZY_HOLD);
    if (flag(v, 'restore-detached')) return 0;
    const st = mod.tree().waitRestored(r.pid); // the server never reaps it
    if (flag(v, 'json')) printJson({ exit: st });
    return st.signal !== undefined ? 128 + st.signal : st.code ?? 0;
  },
};

/** Set in the environment of the heir of a restore -d --lazy-pages (restore/lazy-handover.ts): its socket's fd. */
const HEIR_ENV = 'STASIS_LAZY_HEIR_FD';

/** What a restore reports (a RestoreResult, with the lazy server as JSON). */
type RestoredReport = Omit<RestoreResult, 'lazy'> & { lazy?: { bytes: number; server: number } };

function restoreFrom(v: Values, dir: string, lazy: boolean): RestoreResult {
  // Post-copy: the source is reached before anything is made (the connection is the lazy server's from then on).
  const to = lazyRemoteOf(v);
  const lazyRemote = to && (require('../pageserver/lazy-client') as typeof import('../pageserver/lazy-client')).LazyRemote.connect(to);
  try {
    return restoreWith(v, dir, lazy, lazyRemote);
  } catch (e) {
    lazyRemote?.drop();
    throw e;
  }
}

function restoreWith(v: Values, dir: string, lazy: boolean, lazyRemote: import('../pageserver/lazy-client').LazyRemote | undefined): RestoreResult {
  return mod.restore().restore({
    dir, detach: flag(v, 'restore-detached'), skipFileCheck: flag(v, 'skip-file-check'), shellJob: flag(v, 'shell-job'), tcpClose: flag(v, 'tcp-close'),
    fileLocks: flag(v, 'file-locks'), anyOwner: flag(v, 'allow-foreign-images'), root: str(v, 'root'), external: list(v, 'external'), inheritFd: list(v, 'inherit-fd'), joinNs: list(v, 'join-ns'), manageCgroups: cgroupMode(str(v, 'manage-cgroups')),
    networkLock: networkLock(v), failAt: process.env.STASIS_FAIL_AT || undefined,
    verify: !flag(v, 'no-verify'), lazyPages: lazy, lazyRemote,
  });
}

function reportRestored(v: Values, dir: string, r: RestoredReport, keepLog = false): number {
  const pidfile = str(v, 'pidfile');
  if (pidfile) fs.writeFileSync(path.isAbsolute(pidfile) ? pidfile : path.join(dir, pidfile), `${r.pid}\n`);
  for (const w of r.warnings) { say(2, `stasis: warning: ${w}`); log.warn(w); }
  log.info(restoreSummary(r));
  const timings = withStartup(r.timings);
  if (flag(v, 'json')) printJson({ ...r, timings });
  else {
    if (flag(v, 'timings')) say(2, formatTimings('restore', timings, r.ms, r.remoteCalls, r.remoteStops));
    say(2, `${restoreSummary(r)}; images ${MiB(imagesSize(dir))} MiB`);
    if (r.lazy) say(2, `lazy pages: ${MiB(r.lazy.bytes)} MiB to serve, by pid ${r.lazy.server}`);
  }
  if (!keepLog) closeLog();
  return 0;
}

const showCmd: Command = {
  name: 'show',
  usage: 'stasis show DIR [--json]',
  summary: 'Summarise a checkpoint: processes, threads, registers, memory, files.',
  positionals: ['DIR'],
  options: [{ long: 'json', type: 'flag', help: 'as JSON' }],
  run(v, pos) {
    if (pos.length !== 1) usageError('show needs one DIR');
    const { readCheckpoint, formatShow } = mod.show();
    const d = readCheckpoint(pos[0]);
    console.log(flag(v, 'json') ? JSON.stringify(d, null, 2) : formatShow(d));
    return 0;
  },
};

const checkImagesCmd: Command = {
  name: 'check-images',
  usage: 'stasis check-images DIR [--json]',
  summary: `Verify every file of the checkpoint in DIR against its digest (${DIGEST_FILE}), as a restore does first (exit 1 if one is missing, damaged or not to be trusted).`,
  positionals: ['DIR'],
  options: [
    { long: 'allow-foreign-images', type: 'flag', help: 'trust image files owned by other users' },
    { long: 'json', type: 'flag', help: 'as JSON' },
  ],
  run(v, pos) {
    if (pos.length !== 1) usageError('check-images needs one DIR');
    const lock = mod.dir().lockForReading(pos[0], 'check');
    let r: ImagesReport;
    // A chain (incremental dumps): every parent verified too, and pinned by its child.
    let parents: string[] = [];
    let chainProblem: string | undefined;
    try {
      r = mod.digest().checkImages(pos[0], flag(v, 'allow-foreign-images'));
      try { parents = mod.chain().openParents(pos[0], { anyOwner: flag(v, 'allow-foreign-images'), verify: true }).map((l) => l.dir); } catch (e) {
        if (!(e instanceof StasisError)) throw e;
        chainProblem = e.message;
      }
    } finally { lock.close(); }
    if (flag(v, 'json')) printJson({ ...r, ok: r.ok && !chainProblem, parents, chainProblem });
    else {
      for (const f of r.files) if (!f.ok) console.log(f.problem);
      for (const f of r.unlisted) console.log(`${path.join(r.dir, f)}: not listed in the digest (ignored by a restore)`);
      const bad = r.files.filter((f) => !f.ok).length;
      const bytes = r.files.reduce((n, f) => n + f.size, 0);
      console.log(bad ? `${r.dir}: ${bad} of ${r.files.length} files do not match ${DIGEST_FILE}` : `${r.dir}: all ${r.files.length} files (${MiB(bytes)} MiB) match ${DIGEST_FILE}`);
      for (const p of parents) console.log(`${p}: parent images, verified`);
      if (chainProblem) console.log(chainProblem);
    }
    return r.ok && !chainProblem ? 0 : 1;
  },
};

const checkCmd: Command = {
  name: 'check',
  usage: 'stasis check [--json]',
  summary: 'Tell which kernel features stasis needs are present here (exit 1 if one it needs is missing).',
  options: [{ long: 'json', type: 'flag', help: 'as JSON' }],
  run(v) {
    const f = mod.check().checkFeatures();
    if (flag(v, 'json')) console.log(JSON.stringify(f, null, 2));
    else for (const x of f) console.log(`${x.ok ? 'ok  ' : x.needed ? 'MISS' : 'no  '} ${x.name}${x.ok ? '' : `: ${x.detail}`}`);
    return f.some((x) => x.needed && !x.ok) ? 1 : 0;
  },
};

const demoCmd: Command = {
  name: 'demo',
  usage: 'stasis demo',
  summary: 'Checkpoint a sample program, kill it, restore it, and show it carrying on.',
  options: [],
  run: () => mod.demo().runDemo(),
};

const netlockCmd: Command = {
  name: 'netlock',
  usage: 'stasis netlock [--clear [-D DIR | --id ID | --all]]',
  summary: 'List the network locks of dumped TCP connections here (what each waits for), or remove them: with --clear, the stale ones.',
  options: [
    { long: 'clear', type: 'flag', help: 'remove locks: the stale ones (their checkpoint is gone), or those named below' },
    { long: 'images-dir', short: 'D', type: 'string', arg: 'DIR', help: 'with --clear: the lock that checkpoint waits on (its connections are given up)' },
    { long: 'id', type: 'string', arg: 'ID', help: 'with --clear: lock ID (table inet stasis-ID, chains STASIS-ID-IN/OUT)' },
    { long: 'all', type: 'flag', help: 'with --clear: every lock not held by a running dump' },
    { long: 'json', type: 'flag', help: 'as JSON' },
  ],
  run(v) {
    const sel = { dir: str(v, 'images-dir'), id: str(v, 'id'), all: flag(v, 'all') };
    if (!flag(v, 'clear')) {
      if (sel.dir || sel.id || sel.all) usageError('-D, --id and --all go with --clear');
      const locks = mod.netlock().listNetworkLocks();
      if (flag(v, 'json')) printJson(locks);
      else for (const l of locks) console.log(`${l.id}  ${l.method} ${l.name}  ${l.state}: ${l.detail}`);
      return 0;
    }
    if ([sel.dir, sel.id, sel.all || undefined].filter((x) => x !== undefined).length > 1) usageError('--clear takes one of -D, --id, --all');
    const removed = mod.netlock().clearNetworkLocks(sel);
    if (flag(v, 'json')) printJson({ removed });
    else for (const r of removed) console.log(`removed ${r}`);
    return 0;
  },
};

export const COMMANDS: Command[] = [preDumpCmd, dumpCmd, restoreCmd, showCmd, checkImagesCmd, checkCmd, demoCmd, netlockCmd, pageServerCmd, migrateCmd, migrateReceiveCmd];
