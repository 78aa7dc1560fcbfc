// Test harness: builds the C fixtures, starts them as reparented grandchildren
// (never as Node's own children: libuv's reaper would steal their wait
// statuses and break ptrace), reaps them as a child subreaper, runs the CLI,
// and reads images back. Used by the tests and by bench/ (no node:test here).
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { setChildSubreaper, tryWait4, tryKill, abi, type WaitStatus } from '../src/sys';
import { ImageReader, writeImageFile, type MsgName, type Msg, type Part } from '../src/images/image';
import type { ImageKind } from '../src/images/magic';
import { dumpSteps } from '../src/dump/dump';

export { sleep };

/** The repository root (this file runs as dist/test/harness.js). */
export const ROOT = path.resolve(__dirname, '..', '..');
export const STASIS = path.join(ROOT, 'bin', 'stasis.js');
export const FIXTURE_SRC = path.join(ROOT, 'test', 'fixtures');
export const FIXTURE_BIN = path.join(FIXTURE_SRC, 'bin');
export const PAGE = 4096;

/** Every failure-injection point of a dump, as the dump itself declares them. */
export const DUMP_STEPS = dumpSteps();

let subreaper = false;
/** Once per test process: orphaned fixtures are reparented to us, and we reap them. */
export function initHarness(): void {
  if (subreaper) return;
  setChildSubreaper(true);
  subreaper = true;
}

// ---------------------------------------------------------------- building

export interface BuildOptions {
  srcDir?: string;
  outDir?: string;
  pthread?: boolean;
}

/** gcc -O1 -g -Wall NAME.c into outDir/NAME, only when a source is newer. */
export function buildFixture(name: string, opts: BuildOptions = {}): string {
  const srcDir = opts.srcDir ?? FIXTURE_SRC;
  const outDir = opts.outDir ?? FIXTURE_BIN;
  const src = path.join(srcDir, `${name}.c`);
  const out = path.join(outDir, name);
  const deps = [src, path.join(FIXTURE_SRC, 'fixture.h')].filter((f) => fs.existsSync(f));
  const newest = Math.max(...deps.map((f) => fs.statSync(f).mtimeMs));
  if (fs.existsSync(out) && fs.statSync(out).mtimeMs >= newest) return out;
  fs.mkdirSync(outDir, { recursive: true });
  const tmp = `${out}.${process.pid}.tmp`;
  const args = ['-O1', '-g', '-Wall', '-Wextra', '-Werror', `-I${FIXTURE_SRC}`, '-o', tmp, src];
  if (opts.pthread) args.push('-pthread');
  const r = spawnSync('gcc', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  if (r.error) throw new Error(`cannot run gcc: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`gcc failed for ${src}:\n${r.stderr}`);
  fs.renameSync(tmp, out); // atomic: a concurrent build never sees half a binary
  return out;
}

export function tmpDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `stasis-${prefix}-`));
}

// ---------------------------------------------------------------- processes

/** Poll until `cond` is true; throws with `what` after `timeoutMs`. */
export async function waitFor<T>(what: string, cond: () => T | undefined | false, timeoutMs = 5000, stepMs = 10): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = cond();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(stepMs);
  }
}

/**
 * Reap `pid` (our child by reparenting): poll wait4(WNOHANG) until it has
 * exited or was killed. Stops reported by ptrace (when we are its tracer) are
 * not an end: they are skipped. Throws on timeout.
 */
export async function reap(pid: number, timeoutMs = 5000): Promise<WaitStatus & { kind: 'exited' | 'signaled' }> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const r = tryWait4(pid, abi.WAIT.WNOHANG);
    if (typeof r === 'number') throw new Error(`wait4(${pid}): errno ${-r} (not our child, or already reaped)`);
    if (r.kind === 'exited' || r.kind === 'signaled') return r;
    if (Date.now() > end) throw new Error(`pid ${pid} did not exit within ${timeoutMs} ms`);
    await sleep(5);
  }
}

/** Fields of /proc/PID/stat after the comm: [0] = state, [1] = ppid, [2] = pgrp, [3] = session... */
export function statFields(pid: number): string[] {
  const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  return s.slice(s.lastIndexOf(')') + 2).trim().split(' ');
}

/** Every live pid (tgid) on the machine. */
export function allPids(): number[] {
  return fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d)).map(Number);
}

/** Processes whose parent is `ppid` (default: this test process), zombies included. */
export function childrenOf(ppid = process.pid): number[] {
  const out: number[] = [];
  for (const pid of allPids()) {
    try { if (Number(statFields(pid)[1]) === ppid) out.push(pid); } catch { /* gone meanwhile */ }
  }
  return out.sort((a, b) => a - b);
}

/** `pid`'s descendants (not itself), parents before children. */
export function descendantsOf(pid = process.pid): number[] {
  const out: number[] = [];
  const queue = [pid];
  while (queue.length) {
    for (const c of childrenOf(queue.shift()!)) { out.push(c); queue.push(c); }
  }
  return out;
}

export function cmdline(pid: number): string {
  try { return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean).join(' '); } catch { return '?'; }
}

/**
 * Reap every child of ours that is a zombie (but not `except`: Node's own
 * children, whose statuses libuv collects). The processes of a dumped tree
 * are re-parented to us when the dump kills them: their pids stay taken until
 * reaped. Returns the pids reaped with their statuses.
 */
export function reapZombies(except: number[] = []): WaitStatus[] {
  const out: WaitStatus[] = [];
  for (const pid of childrenOf()) {
    if (except.includes(pid)) continue;
    let state: string;
    try { state = statFields(pid)[0]; } catch { continue; }
    if (state !== 'Z') continue;
    const r = tryWait4(pid, abi.WAIT.WNOHANG);
    if (typeof r !== 'number' && (r.kind === 'exited' || r.kind === 'signaled')) out.push(r);
  }
  return out;
}

/** Wait until none of `pids` exists any more (reaping our zombies meanwhile). */
export async function waitGone(pids: number[], timeoutMs = 5000, except: number[] = []): Promise<void> {
  await waitFor(`pids ${pids.join(' ')} to be gone`, () => {
    reapZombies(except);
    return pids.every((p) => !fs.existsSync(`/proc/${p}`));
  }, timeoutMs, 5);
}

export function procStatus(pid: number): Map<string, string> {
  const m = new Map<string, string>();
  for (const line of fs.readFileSync(`/proc/${pid}/status`, 'utf8').split('\n')) {
    const i = line.indexOf(':');
    if (i > 0) m.set(line.slice(0, i), line.slice(i + 1).trim());
  }
  return m;
}

/** One-letter state of /proc/PID/stat (R, S, T, t, Z...). */
export function procState(pid: number): string {
  const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  return s.slice(s.lastIndexOf(')') + 2).split(' ')[0];
}

export function tracerPid(pid: number): number {
  return Number(procStatus(pid).get('TracerPid'));
}

export function listFds(pid: number): string[] {
  return fs.readdirSync(`/proc/${pid}/fd`).sort((a, b) => Number(a) - Number(b));
}

export interface MapsLine {
  start: bigint;
  end: bigint;
  perms: string; // "rw-p"
  path: string;
}

export function readMapsText(pid: number): string {
  return fs.readFileSync(`/proc/${pid}/maps`, 'utf8');
}

export function parseMapsText(text: string): MapsLine[] {
  return text.split('\n').filter(Boolean).map((line) => {
    const m = /^([0-9a-f]+)-([0-9a-f]+) (\S{4}) \S+ \S+ \d+\s*(.*)$/.exec(line);
    if (!m) throw new Error(`bad maps line: ${line}`);
    return { start: BigInt('0x' + m[1]), end: BigInt('0x' + m[2]), perms: m[3], path: m[4] };
  });
}

export function mappingOf(maps: MapsLine[], addr: bigint): MapsLine | undefined {
  return maps.find((v) => v.start <= addr && addr < v.end);
}

export interface Manifest {
  regions: { name: string; addr: bigint; len: number; seed: number }[];
  holes: { name: string; addr: bigint; len: number }[];
  /** Other lines: first word → the rest, split on spaces. */
  values: Map<string, string[]>;
}

export function parseManifest(log: string): Manifest {
  const mf: Manifest = { regions: [], holes: [], values: new Map() };
  for (const line of log.split('\n')) {
    const w = line.trim().split(/\s+/);
    if (w[0] === 'REGION') mf.regions.push({ name: w[1], addr: BigInt(w[2]), len: Number(w[3]), seed: Number(w[4]) });
    else if (w[0] === 'HOLE') mf.holes.push({ name: w[1], addr: BigInt(w[2]), len: Number(w[3]) });
    else if (w[0] === 'READY') break;
    else if (w[0]) mf.values.set(w[0], w.slice(1));
  }
  return mf;
}

export interface StartOptions {
  args?: string[];
  readyTimeoutMs?: number;
  /** The fixture has fds beyond 0-2 at READY (pipes of its own...): do not refuse it. */
  extraFds?: boolean;
}

/** A fixture process: a grandchild reparented to us, stdio redirected to its log. */
export class Fixture {
  readonly name: string;
  readonly pid: number;
  /** Scratch directory of this instance (argv[1] of the fixture; holds its log). */
  readonly dir: string;
  readonly logPath: string;
  manifest: Manifest = { regions: [], holes: [], values: new Map() };
  private reaped: WaitStatus | undefined;

  private constructor(name: string, pid: number, dir: string, logPath: string) {
    this.name = name;
    this.pid = pid;
    this.dir = dir;
    this.logPath = logPath;
  }

  /**
   * Build, start and wait for READY; checks that only fds 0-2 are open
   * (`extraFds`: the fixture opens fds of its own before READY).
   */
  static async start(name: string, opts: BuildOptions & StartOptions = {}): Promise<Fixture> {
    initHarness();
    const bin = buildFixture(name, opts);
    return Fixture.startCommand(name, (dir) => [bin, dir, ...(opts.args ?? [])], opts);
  }

  /**
   * Start any program the same way (double fork, setsid, stdio on the log):
   * `argv(dir)` gives its command line for its scratch directory. The program
   * must print `PID n` and then `READY` like the C fixtures.
   */
  static async startCommand(name: string, argv: (dir: string) => string[], opts: StartOptions = {}): Promise<Fixture> {
    initHarness();
    const dir = tmpDir(name);
    const logPath = path.join(dir, 'log');
    // Double fork: sh starts the fixture in the background and exits; the
    // fixture is reparented to us (the subreaper), which libuv never waits for.
    const r = spawnSync('/bin/sh', ['-c', 'setsid "$@" </dev/null >"$LOG" 2>&1 & echo $!', 'sh', ...argv(dir)], {
      env: { ...process.env, LOG: logPath }, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'],
    });
    const pid = Number(r.stdout.trim());
    if (r.status !== 0 || !Number.isInteger(pid) || pid <= 0) {
      throw new Error(`could not start ${name}: status ${r.status} stdout ${JSON.stringify(r.stdout)} stderr ${r.stderr}`);
    }
    const fx = new Fixture(name, pid, dir, logPath);
    try {
      await fx.waitLog(/^READY$/m, opts.readyTimeoutMs ?? 10000);
      fx.manifest = parseManifest(fx.log());
      const said = fx.manifest.values.get('PID')?.[0];
      if (Number(said) !== pid) throw new Error(`${name}: started pid ${pid} but the fixture says PID ${said}`);
      const fds = listFds(pid);
      if (!opts.extraFds && fds.join(',') !== '0,1,2') throw new Error(`${name} (pid ${pid}) has fds ${fds.join(',')}; expected exactly 0,1,2`);
    } catch (e) {
      await fx.kill();
      throw e;
    }
    return fx;
  }

  log(): string {
    try { return fs.readFileSync(this.logPath, 'utf8'); } catch { return ''; }
  }

  async waitLog(re: RegExp, timeoutMs = 10000): Promise<RegExpExecArray> {
    return waitFor(`/${re.source}/ in ${this.name}'s log`, () => {
      const log = this.log();
      const m = re.exec(log);
      if (m) return m;
      if (/^FAIL/m.test(log)) throw new Error(`${this.name} failed:\n${log}`);
      if (this.reaped === undefined && !fs.existsSync(`/proc/${this.pid}`)) throw new Error(`${this.name} vanished; log:\n${log}`);
      return undefined;
    }, timeoutMs);
  }

  /** A manifest value (first word after the key) as a bigint. */
  addr(key: string): bigint {
    const v = this.manifest.values.get(key);
    if (!v) throw new Error(`${this.name}: no ${key} line in its manifest`);
    return BigInt(v[0]);
  }

  /** Read the fixture's COUNTER (an unsigned long) through /proc/PID/mem. */
  counter(): bigint {
    const fd = fs.openSync(`/proc/${this.pid}/mem`, 'r');
    try {
      const b = Buffer.alloc(8);
      const n = fs.readSync(fd, b, 0, 8, Number(this.addr('COUNTER')));
      if (n !== 8) throw new Error(`short read of the counter of ${this.pid}`);
      return b.readBigUInt64LE(0);
    } finally {
      fs.closeSync(fd);
    }
  }

  /** Resolves once the counter has gone past its current value. */
  async assertCounting(timeoutMs = 3000): Promise<void> {
    const c0 = this.counter();
    await waitFor(`${this.name}'s counter to move past ${c0}`, () => this.counter() > c0, timeoutMs, 5);
  }

  /** Resolves once the counter has reached `n`. */
  async waitCounter(n: bigint, timeoutMs = 5000): Promise<void> {
    await waitFor(`${this.name}'s counter to reach ${n}`, () => this.counter() >= n, timeoutMs, 10);
  }

  get alive(): boolean {
    if (this.reaped) return false;
    try { return procState(this.pid) !== 'Z'; } catch { return false; }
  }

  /**
   * It was dumped (and reaped), then restored under the same pid: alive
   * again, to be reaped again. Call after `stasis restore` succeeded.
   */
  restored(): this {
    this.reaped = undefined;
    return this;
  }

  /** Reap it (after it exited or was killed). */
  async reap(timeoutMs = 5000): Promise<WaitStatus> {
    if (this.reaped) return this.reaped;
    const st = await reap(this.pid, timeoutMs);
    this.reaped = st;
    return st;
  }

  /** SIGTERM, reap, and return the exit status and log; the caller asserts PASS. */
  async terminate(timeoutMs = 10000): Promise<{ status: WaitStatus; log: string }> {
    if (this.reaped) throw new Error(`${this.name} was already reaped`);
    tryKill(this.pid, abi.SIG.SIGTERM);
    const status = await this.reap(timeoutMs);
    return { status, log: this.log() };
  }

  /** Cleanup: SIGKILL (if not reaped yet), reap, remove the scratch directory. */
  async kill(): Promise<void> {
    if (!this.reaped) {
      tryKill(this.pid, abi.SIG.SIGCONT);
      tryKill(this.pid, abi.SIG.SIGKILL);
      try { await this.reap(5000); } catch { /* reported by the test that owned it */ }
    }
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------- the CLI

export interface CliResult {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export function runStasis(args: string[], env: Record<string, string | undefined> = {}, timeoutMs = 60000): CliResult {
  const e: NodeJS.ProcessEnv = { ...process.env };
  delete e.STASIS_FAIL_AT;
  for (const [k, v] of Object.entries(env)) if (v === undefined) delete e[k]; else e[k] = v;
  const r: SpawnSyncReturns<string> = spawnSync(process.execPath, [STASIS, ...args], {
    env: e, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: timeoutMs,
  });
  if (r.error) throw r.error;
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

export function describeCli(r: CliResult): string {
  return `status ${r.status} signal ${r.signal}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`;
}

/**
 * `stasis restore -D dir -d [...args]`: throws (with stasis' output) unless
 * it exited 0 and named the restored pid. When stasis exits, the restored root
 * (stasis' child) is re-parented to us: ours to reap.
 */
export function restoreDetached(dir: string, args: string[] = [], env: Record<string, string | undefined> = {}): { pid: number; r: CliResult } {
  const r = runStasis(['restore', '-D', dir, '-d', ...args], env);
  const m = /^restored pid (\d+)\b/m.exec(r.stderr);
  if (r.status !== 0 || !m) throw new Error(`restore -D ${dir} -d failed: ${describeCli(r)}`);
  return { pid: Number(m[1]), r };
}

// ---------------------------------------------------------------- images

/** The fixtures' byte pattern: same function as fx_pat in fixtures/fixture.h. */
export function patternByte(seed: number, i: number): number {
  return ((((Math.imul(i, 0x9e3779b1) ^ Math.imul(seed, 40503) ^ (i >>> 12)) >>> 8) & 0xff) | 1);
}

export function pattern(seed: number, len: number, from = 0): Buffer {
  const b = Buffer.alloc(len);
  for (let i = 0; i < len; i++) b[i] = patternByte(seed, from + i);
  return b;
}

export interface PagemapEntry {
  vaddr: bigint;
  nrPages: number;
  flags: number;
  /** Offset of this entry's first page in pages-N.img. */
  offset: number;
}

export interface DumpedMemory {
  pagesId: number;
  entries: PagemapEntry[];
  pages: Buffer;
}

/** pagemap-PID.img (through the library's reader) and its pages-N.img. */
export function loadDumpedMemory(dir: string, pid: number): DumpedMemory {
  const raw = new ImageReader(dir, null).withHead(`pagemap-${pid}.img`, 'PAGEMAP', 'pagemap_head', 'pagemap_entry');
  const pagesId = raw.head.pages_id;
  let offset = 0;
  const entries: PagemapEntry[] = raw.entries.map((e) => {
    const pe = { vaddr: e.vaddr, nrPages: e.nr_pages, flags: e.flags ?? 0, offset };
    offset += pe.nrPages * PAGE;
    return pe;
  });
  const pages = fs.readFileSync(path.join(dir, `pages-${pagesId}.img`));
  if (pages.length !== offset) throw new Error(`pages-${pagesId}.img has ${pages.length} bytes; pagemap says ${offset}`);
  return { pagesId, entries, pages };
}

/** The bytes [addr, addr+len) as dumped; throws if some page is not in the image. */
export function dumpedBytes(mem: DumpedMemory, addr: bigint, len: number): Buffer {
  const out = Buffer.alloc(len);
  let done = 0;
  while (done < len) {
    const a = addr + BigInt(done);
    const e = mem.entries.find((x) => x.vaddr <= a && a < x.vaddr + BigInt(x.nrPages * PAGE));
    if (!e) throw new Error(`address 0x${a.toString(16)} is not in the dump`);
    const within = Number(a - e.vaddr);
    const n = Math.min(len - done, e.nrPages * PAGE - within);
    mem.pages.copy(out, done, e.offset + within, e.offset + within + n);
    done += n;
  }
  return out;
}

/** Pagemap entries overlapping [start, end). */
export function entriesIn(mem: DumpedMemory, start: bigint, end: bigint): PagemapEntry[] {
  return mem.entries.filter((e) => e.vaddr < end && start < e.vaddr + BigInt(e.nrPages * PAGE));
}

/** Replace an image file with new contents (tests that tamper with images). */
export function rewriteImage(dir: string, file: string, kind: ImageKind, list: Part[]): void {
  fs.rmSync(path.join(dir, file), { force: true });
  writeImageFile(path.join(dir, file), kind, list);
}

/** Entries of an image each followed by raw bytes, as entry + `extra`. */
export function readWithPayloads<N extends MsgName>(dir: string, file: string, kind: ImageKind, msg: N, len: (e: Msg<N>) => number): (Msg<N> & { extra: Buffer })[] {
  return new ImageReader(dir, null).withPayloads(file, kind, msg, len).map((x) => ({ ...x.entry, extra: x.payload }));
}

/** Run crit; throws with its stderr if it fails or is missing. */
export function crit(args: string[]): string {
  const r = spawnSync('crit', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 256 << 20 });
  if (r.error) throw new Error(`cannot run crit (Debian package criu): ${r.error.message}`);
  if (r.status !== 0) throw new Error(`crit ${args.join(' ')} failed (status ${r.status}):\n${r.stderr}`);
  return r.stdout;
}
