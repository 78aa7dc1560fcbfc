// The Fixture class: a fixture (or any program started the same way) as a
// reparented grandchild with its log and the manifest it printed before READY.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { tryKill, abi, type WaitStatus } from '../../src/sys';
import { buildFixture, tmpDir, type BuildOptions } from './build';
import { initHarness, waitFor, reap, procState, listFds } from './process';

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
  /** More environment for the program. */
  env?: Record<string, string>;
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
      env: { ...process.env, ...opts.env, LOG: logPath, STASIS_FIXTURE_REAPER: String(process.pid) }, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'],
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
