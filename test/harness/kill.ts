// Killing the dumper at random moments: `stasis dump` is SIGKILLed a random
// time after it seized its target, and the target must come out as it went
// in: alive, untraced, running, with the same threads, each with its own
// signal mask, and exactly the same mappings (no scratch page left behind).
// Shared by test/kill-dumper.test.ts and bench/kill-dumper.ts.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { Fixture } from './fixture';
import { STASIS } from './cli';
import { procState, procStatus, readMapsText, tracerPid, waitFor } from './process';

/** What must not change in a target that a dumper left alone. */
export interface TargetState {
  maps: string;
  threads: number[];
  /** SigBlk of each thread. */
  masks: Map<number, string>;
}

export function targetState(pid: number): TargetState {
  const threads = fs.readdirSync(`/proc/${pid}/task`).map(Number).sort((a, b) => a - b);
  const masks = new Map(threads.map((t) => [t, procStatus(t).get('SigBlk') ?? '?'] as const));
  return { maps: readMapsText(pid), threads, masks };
}

/** The first difference between two states, or null. */
export function stateDiff(before: TargetState, after: TargetState): string | null {
  if (before.threads.join(',') !== after.threads.join(',')) return `threads ${before.threads} became ${after.threads}`;
  for (const [t, m] of before.masks) if (after.masks.get(t) !== m) return `thread ${t}: SigBlk ${m} became ${after.masks.get(t)}`;
  if (before.maps !== after.maps) {
    const a = new Set(before.maps.split('\n')), b = new Set(after.maps.split('\n'));
    const gone = [...a].filter((l) => !b.has(l)), added = [...b].filter((l) => !a.has(l));
    return `mappings changed: -[${gone.join(' | ')}] +[${added.join(' | ')}]`;
  }
  return null;
}

/** A small seeded PRNG (mulberry32): a failing run can be replayed from its seed. */
export function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The CLI to kill: this build's, or STASIS_BIN (to measure another build the same way). */
const DUMPER = process.env.STASIS_BIN ?? STASIS;

function spinUntil(t: bigint): void {
  while (process.hrtime.bigint() < t) { /* a timer cannot wait for less than a millisecond */ }
}

function exited(child: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve({ code: child.exitCode, signal: child.signalCode });
    else child.once('exit', (code, signal) => resolve({ code, signal }));
  });
}

/** Start `stasis dump` and wait until it has seized `pid`; null if it finished (or failed) first. */
async function dumpUntilSeized(pid: number, dir: string, leaveRunning: boolean): Promise<{ child: ChildProcess; seizedAt: bigint }> {
  const child = spawn(process.execPath, [DUMPER, 'dump', '-t', String(pid), '-D', dir, ...(leaveRunning ? ['-R'] : [])], { stdio: 'ignore' });
  await waitFor(`stasis dump ${child.pid} to seize ${pid}`, () => {
    if (child.exitCode !== null || child.signalCode !== null) return true;
    try { return tracerPid(pid) === child.pid; } catch { return true; }
  }, 30000, 1);
  return { child, seizedAt: process.hrtime.bigint() };
}

/** Milliseconds from the seize of `fx` to the end of a `dump -R` of it. */
export async function measureDump(fx: Fixture, dir: string): Promise<number> {
  const { child, seizedAt } = await dumpUntilSeized(fx.pid, dir, true);
  const r = await exited(child);
  if (r.code !== 0) throw new Error(`calibration dump of ${fx.name} failed: ${JSON.stringify(r)}`);
  fs.rmSync(dir, { recursive: true, force: true });
  return Number(process.hrtime.bigint() - seizedAt) / 1e6;
}

export interface KillOutcome {
  /** The dump was complete before the kill (the target may then be dead by design: no -R). */
  completed: boolean;
  /** Milliseconds after the seize that the kill was sent. */
  atMs: number;
  /** What was wrong with the target afterwards, or null. */
  harm: string | null;
}

/**
 * One dump of `fx`, SIGKILLed `delayMs` after it seized it; then check the
 * target against `before`. A dump that completed without -R kills its target
 * by design: that is no harm (the caller starts a new target).
 */
export async function killDumpAt(fx: Fixture, before: TargetState, dir: string, leaveRunning: boolean, delayMs: number): Promise<KillOutcome> {
  const { child, seizedAt } = await dumpUntilSeized(fx.pid, dir, leaveRunning);
  spinUntil(seizedAt + BigInt(Math.round(delayMs * 1e6)));
  const atMs = Number(process.hrtime.bigint() - seizedAt) / 1e6;
  child.kill('SIGKILL');
  const r = await exited(child);
  if (r.code !== 0 && r.signal !== 'SIGKILL') throw new Error(`stasis dump of ${fx.name} ${fx.pid} failed by itself: ${JSON.stringify(r)}`);
  const completed = r.code === 0 || fs.existsSync(path.join(dir, 'inventory.img'));
  fs.rmSync(dir, { recursive: true, force: true });
  if (completed && !leaveRunning && !fx.alive) return { completed, atMs, harm: null };
  return { completed, atMs, harm: await harmTo(fx, before) };
}

/** null if `fx` is as `before`: alive, untraced, running, same threads, masks and mappings. */
export async function harmTo(fx: Fixture, before: TargetState): Promise<string | null> {
  if (!fx.alive) {
    const st = await fx.reap().catch((e: Error) => e.message);
    return `target died: ${JSON.stringify(st)}`;
  }
  try {
    // The kernel detaches the tracees of a dead tracer; the task may still be
    // running its own restoring code for a few microseconds.
    await waitFor('TracerPid 0', () => tracerPid(fx.pid) === 0, 3000, 2);
    await waitFor('running', () => !/^[tTZ]$/.test(procState(fx.pid)), 3000, 2);
    let diff: string | null = null;
    await waitFor('state as before', () => (diff = stateDiff(before, targetState(fx.pid))) === null, 3000, 2)
      .catch(() => { throw new Error(diff ?? 'state differs'); });
    await fx.assertCounting(5000);
    return null;
  } catch (e) {
    return fx.alive ? (e as Error).message : `target died: ${(e as Error).message}`;
  }
}

export interface CampaignOptions {
  fixture: 'victim' | 'threads';
  leaveRunning: boolean;
  kills: number;
  seed: number;
  /** Scratch directory for the images. */
  dir: string;
  log?: (line: string) => void;
  /** Log a line every `progress` kills. */
  progress?: number;
}

export interface CampaignResult {
  kills: number;
  /** Kills that landed after the dump was complete. */
  completed: number;
  /** One line per harmed target (a kill that harmed it, or a failed self-check). */
  harmed: string[];
  /** Targets that passed their self-check at the end of their life. */
  passed: number;
}

async function endOf(fx: Fixture): Promise<string | null> {
  try {
    // The victim's self-check wants a few undisturbed sleeps.
    await fx.waitCounter(fx.counter() + 3n, 10000);
    const { status, log } = await fx.terminate();
    if (status.kind !== 'exited' || status.code !== 0 || !/^PASS$/m.test(log)) return `${fx.name} ${fx.pid} failed its self-check: ${JSON.stringify(status)} ${log.split('\n').filter((l) => /FAIL/.test(l)).join('; ')}`;
    return null;
  } catch (e) {
    return `${fx.name} ${fx.pid}: ${(e as Error).message}`;
  } finally {
    await fx.kill();
  }
}

/**
 * `kills` dumps of one kind of target, each SIGKILLed at a random moment
 * between its seize and its end (as measured first). A target is kept for
 * the next kill while unharmed; a dead or harmed one is replaced.
 */
export async function killCampaign(o: CampaignOptions): Promise<CampaignResult> {
  const rand = rng(o.seed);
  const start = () => Fixture.start(o.fixture, { pthread: o.fixture === 'threads' });
  const res: CampaignResult = { kills: 0, completed: 0, harmed: [], passed: 0 };
  let fx = await start();
  try {
    const dumpMs = await measureDump(fx, o.dir);
    o.log?.(`${o.fixture}${o.leaveRunning ? ' -R' : ''}: a dump takes ${dumpMs.toFixed(1)} ms from its seize; seed ${o.seed}`);
    for (let i = 0; i < o.kills; i++) {
      const before = targetState(fx.pid);
      const out = await killDumpAt(fx, before, o.dir, o.leaveRunning, rand() * dumpMs);
      res.kills++;
      if (out.completed) res.completed++;
      if (o.progress && res.kills % o.progress === 0) o.log?.(`  ${res.kills} kills, ${res.harmed.length} harmed`);
      if (out.harm) {
        res.harmed.push(`kill ${i} at ${out.atMs.toFixed(2)} ms: ${out.harm}`);
        o.log?.(`HARMED: ${o.fixture}${o.leaveRunning ? ' -R' : ''} kill ${i} at ${out.atMs.toFixed(2)} ms: ${out.harm}`);
        await fx.kill();
        fx = await start();
      } else if (!fx.alive) {
        await fx.reap();
        await fx.kill();
        fx = await start();
      }
    }
  } finally {
    const end = await endOf(fx);
    if (end) res.harmed.push(end); else res.passed++;
  }
  return res;
}
