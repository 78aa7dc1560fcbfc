// stasis next to CRIU, side by side: the small counter and a process with
// SIZE of touched anonymous memory (default 1 GiB), each dumped and restored
// by both tools in turn through their command lines (wall time includes
// start-up, as a user sees it: each tool's file is executed, so stasis
// starts through bin/stasis.js's own #! line, as `stasis` and `npx stasis` do).
//
//   npm run build && node dist/bench/vs-criu.js --criu /path/to/criu [--runs N] [--size-mib N] [--only small|big]
//     [--before /other/checkout/bin/stasis.js]   (another stasis, e.g. main, interleaved as 'before')
//
// Runs are interleaved (stasis then CRIU, then CRIU then stasis...) on the
// same process: each tool dumps (and kills) what the other restored, then
// restores it, so both see the same memory, already faulted in. Images go to
// /dev/shm (tmpfs) and are removed after each restore. Prints medians, the
// ratios stasis / CRIU, and the load average before and after. CRIU is a
// benchmark peer only: stasis never calls it.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { parseArgs } from 'node:util';
import { Fixture, initHarness, waitFor, buildFixture, ROOT, STASIS } from '../test/harness';

const { values } = parseArgs({
  options: {
    criu: { type: 'string' },
    runs: { type: 'string', default: '5' },
    'size-mib': { type: 'string', default: '1024' },
    only: { type: 'string' },
    before: { type: 'string' },
    hogs: { type: 'string', default: '0' },
  },
});
const RUNS = Number(values.runs);
const SIZE_MIB = Number(values['size-mib']);
const CRIU = values.criu;
const BEFORE = values.before;
const HOGS = Number(values.hogs);
if (!(HOGS >= 0)) throw new Error('--hogs must be a number');
if (!(RUNS > 0) || !(SIZE_MIB > 0)) throw new Error('--runs and --size-mib must be positive numbers');
if (CRIU && !fs.existsSync(CRIU)) throw new Error(`no CRIU binary at ${CRIU}`);

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

interface Sample { dump: number; frozen: number; restore: number; phases?: Record<string, number>; rphases?: Record<string, number> }

function timedRun(cmd: string, args: string[]): { ms: number; stdout: string; stderr: string } {
  const t0 = process.hrtime.bigint();
  const r = spawnSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 64 << 20 });
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  if (r.error) throw r.error;
  if (r.status !== 0) throw new Error(`${path.basename(cmd)} ${args.join(' ')}: status ${r.status}\n${r.stderr}`);
  return { ms, stdout: r.stdout, stderr: r.stderr };
}

/** CRIU's frozen time (µs, dump_stats_entry.frozen_time = 2) from its stats-dump image. */
function criuFrozenMs(dir: string): number {
  const b = fs.readFileSync(path.join(dir, 'stats-dump'));
  let off = 8 + 4; // two magics, then the entry's length
  const varint = (): number => {
    let v = 0, mul = 1;
    for (;;) { const x = b[off++]; v += (x & 0x7f) * mul; mul *= 128; if (x < 0x80) return v; }
  };
  if (b[off++] !== 0x0a) throw new Error('stats-dump: no dump entry');
  const end = varint() + off;
  while (off < end) {
    const key = varint();
    const v = varint();
    if (key === (2 << 3)) return v / 1000;
  }
  throw new Error('stats-dump: no frozen_time');
}

type Tool = 'stasis' | 'before' | 'criu';

const binOf = (tool: Tool) => (tool === 'before' ? BEFORE! : STASIS);

function dumpWith(tool: Tool, pid: number, dir: string): { ms: number; frozen: number; phases?: Record<string, number> } {
  if (tool !== 'criu') {
    const r = timedRun(binOf(tool), ['dump', '-t', String(pid), '-D', dir, '--json']);
    const j = JSON.parse(r.stdout.trim().split('\n').pop()!) as { frozenMs: number; timings: Record<string, number> };
    return { ms: r.ms, frozen: j.frozenMs, phases: j.timings };
  }
  const r = timedRun(CRIU!, ['dump', '-t', String(pid), '-D', dir]);
  return { ms: r.ms, frozen: criuFrozenMs(dir) };
}

function restoreWith(tool: Tool, dir: string): { ms: number; phases?: Record<string, number> } {
  if (tool !== 'criu') {
    const r = timedRun(binOf(tool), ['restore', '-d', '-D', dir, '--json']);
    const j = JSON.parse(r.stdout.trim().split('\n')[0]) as { timings: Record<string, number> };
    return { ms: r.ms, phases: j.timings };
  }
  return { ms: timedRun(CRIU!, ['restore', '-d', '-D', dir]).ms };
}

/** Dump `fx` with `tool` (killing it), reap it, restore it, and wait until it runs again. */
async function cycle(tool: Tool, fx: Fixture, work: string, n: number): Promise<Sample> {
  const dir = path.join(work, `${tool}-${n}`);
  fs.mkdirSync(dir, { recursive: true });
  const d = dumpWith(tool, fx.pid, dir);
  await fx.reap(10000);
  const r = restoreWith(tool, dir);
  fx.restored();
  await waitFor(`pid ${fx.pid} restored by ${tool}`, () => fs.existsSync(`/proc/${fx.pid}`), 5000);
  fs.rmSync(dir, { recursive: true, force: true });
  return { dump: d.ms, frozen: d.frozen, restore: r.ms, phases: d.phases, rphases: r.phases };
}

function load(): string {
  return os.loadavg().map((x) => x.toFixed(2)).join(' ');
}

function startup(): { help: number; node: number; before?: number } {
  const help: number[] = [];
  const bare: number[] = [];
  const before: number[] = [];
  for (let i = 0; i < Math.max(7, RUNS); i++) {
    bare.push(timedRun(process.execPath, ['-e', '0']).ms);
    help.push(timedRun(STASIS, ['--help']).ms);
    if (BEFORE) before.push(timedRun(BEFORE, ['--help']).ms);
  }
  return { help: median(help), node: median(bare), before: BEFORE ? median(before) : undefined };
}

function phaseMedians(samples: Sample[], key: 'phases' | 'rphases'): string {
  const names = [...new Set(samples.flatMap((s) => Object.keys(s[key] ?? {})))];
  const out = names.map((n) => [n, median(samples.map((s) => s[key]?.[n] ?? 0))] as const).filter(([, v]) => v >= 0.5);
  return out.map(([n, v]) => `${n} ${v.toFixed(1)}`).join(', ');
}

type Medians = Record<Tool, Record<'dump' | 'frozen' | 'restore', number>>;

async function runCase(name: string, fx: Fixture, work: string): Promise<Medians> {
  const tools: Tool[] = ['stasis', ...(BEFORE ? ['before' as const] : []), ...(CRIU ? ['criu' as const] : [])];
  const samples: Record<Tool, Sample[]> = { stasis: [], before: [], criu: [] };
  // One warm-up round each (CRIU caches its kernel checks; page cache, JIT of the children).
  for (const t of tools) await cycle(t, fx, work, -1);
  for (let i = 0; i < RUNS; i++) {
    const order = i % 2 ? [...tools].reverse() : tools;
    for (const t of order) samples[t].push(await cycle(t, fx, work, i));
  }
  const med = (t: Tool, k: 'dump' | 'frozen' | 'restore') => median(samples[t].map((s) => s[k]));
  console.log(`\n${name} (${RUNS} interleaved runs, medians, ms):`);
  const b = BEFORE ? `${'before'.padStart(9)}` : '';
  console.log(`  ${''.padEnd(12)} ${'stasis'.padStart(9)}${b}${CRIU ? `${'CRIU'.padStart(9)}${'ratio'.padStart(8)}` : ''}${BEFORE && CRIU ? `${'before ratio'.padStart(14)}` : ''}`);
  for (const k of ['dump', 'frozen', 'restore'] as const) {
    const s = med('stasis', k);
    const p = BEFORE ? med('before', k) : 0;
    const c = CRIU ? med('criu', k) : 0;
    const cells = [`  ${(k === 'frozen' ? 'frozen' : `${k} wall`).padEnd(12)} ${s.toFixed(1).padStart(9)}`, BEFORE ? p.toFixed(1).padStart(9) : '',
      CRIU ? `${c.toFixed(1).padStart(9)}${(s / c).toFixed(2).padStart(7)}×` : '', BEFORE && CRIU ? `${(p / c).toFixed(2).padStart(13)}×` : ''];
    console.log(cells.join(''));
  }
  console.log(`  stasis dump phases: ${phaseMedians(samples.stasis, 'phases')}`);
  console.log(`  stasis restore phases: ${phaseMedians(samples.stasis, 'rphases')}`);
  if (BEFORE) {
    console.log(`  before dump phases: ${phaseMedians(samples.before, 'phases')}`);
    console.log(`  before restore phases: ${phaseMedians(samples.before, 'rphases')}`);
  }
  const all = (t: Tool) => ({ dump: med(t, 'dump'), frozen: med(t, 'frozen'), restore: med(t, 'restore') });
  return { stasis: all('stasis'), before: BEFORE ? all('before') : all('stasis'), criu: CRIU ? all('criu') : all('stasis') };
}

/**
 * The machine's own floor for SIZE (bench/fixtures/floor.c, in C, best of 2):
 * the copy of a process's memory into a file in the images' directory and
 * the fill of fresh memory from it, on 1 and on 2 threads, and the kill of
 * such a process (with process_mrelease). A dump cannot take less than the
 * copy (on every core) and the kill; a restore not less than the fill. Put
 * next to CRIU's times of the same run: what ratio is possible at all here.
 */
function machineFloor(work: string, m: Medians): void {
  const bin = buildFixture('floor', { srcDir: path.join(ROOT, 'bench', 'fixtures'), outDir: path.join(ROOT, 'dist', 'bench-bin'), pthread: true });
  const threads = Math.min(2, os.availableParallelism?.() ?? os.cpus().length);
  const f = JSON.parse(timedRun(bin, [work, String(SIZE_MIB), String(threads)]).stdout) as { copy1: number; copyN: number; kill: number; fill1: number; fillN: number };
  console.log(`\nmachine floor for ${SIZE_MIB} MiB (C, bench/fixtures/floor.c, best of 2, ms): copy out of a process into a file here ${f.copy1} (1 thread) / ${f.copyN} (${threads}); ` +
    `kill to reaped ${f.kill}; fill of fresh memory from the file ${f.fill1} / ${f.fillN}`);
  const dumpFloor = f.copyN + f.kill;
  const frozenFloor = f.copyN + f.kill;
  const restoreFloor = f.fillN;
  const ratio = (x: number, c: number) => (CRIU ? ` = ${(x / c).toFixed(2)}× CRIU's ${c.toFixed(1)}` : '');
  console.log(`  no dump can be faster than copy + kill = ${dumpFloor.toFixed(1)}${ratio(dumpFloor, m.criu.dump)}; ` +
    `frozen the same ${frozenFloor.toFixed(1)}${ratio(frozenFloor, m.criu.frozen)}; no restore faster than the fill ${restoreFloor.toFixed(1)}${ratio(restoreFloor, m.criu.restore)}`);
  console.log(`  stasis above its floor: dump ${(m.stasis.dump / dumpFloor).toFixed(2)}×, frozen ${(m.stasis.frozen / frozenFloor).toFixed(2)}×, restore ${(m.stasis.restore / restoreFloor).toFixed(2)}×`);
}

/** N shell busy loops (their pids): the load the bench runs under with --hogs. */
function startHogs(n: number): ChildProcess[] {
  return Array.from({ length: n }, () => spawn('/bin/sh', ['-c', 'while :; do :; done'], { stdio: 'ignore' }));
}

async function stopHogs(hogs: ChildProcess[]): Promise<void> {
  await Promise.all(hogs.map((h) => new Promise<void>((resolve) => {
    if (h.exitCode !== null || h.signalCode !== null) return resolve();
    h.once('exit', () => resolve());
    h.kill('SIGKILL');
  })));
}

async function main(): Promise<void> {
  initHarness();
  const work = fs.mkdtempSync('/dev/shm/stasis-bench-');
  const fixtures: Fixture[] = [];
  const hogs = startHogs(HOGS);
  try {
    console.log(`stasis vs ${CRIU ?? '(no CRIU given: stasis only)'}; ${os.cpus().length} CPUs; ${HOGS} CPU hog(s); load average at start ${load()}`);
    const st = startup();
    console.log(`start-up (median): node -e 0 ${st.node.toFixed(1)} ms, stasis --help ${st.help.toFixed(1)} ms${st.before !== undefined ? `, before --help ${st.before.toFixed(1)} ms` : ''}`);
    if (values.only !== 'big') {
      const fx = await Fixture.start('counter');
      fixtures.push(fx);
      await runCase('small counter', fx, work);
      await fx.assertCounting();
    }
    if (values.only !== 'small') {
      const fx = await Fixture.start('bigmem', {
        srcDir: path.join(ROOT, 'bench', 'fixtures'), outDir: path.join(ROOT, 'dist', 'bench-bin'), args: [String(SIZE_MIB)], readyTimeoutMs: 120000,
      });
      fixtures.push(fx);
      const m = await runCase(`${SIZE_MIB} MiB touched anonymous memory`, fx, work);
      machineFloor(work, m);
    }
    for (const fx of fixtures.splice(0)) {
      const { log } = await fx.terminate(60000);
      console.log(`${fx.name} self-check after every dump and restore: ${/^PASS$/m.test(log) ? 'PASS' : log.trim().split('\n').slice(-3).join(' | ')}`);
    }
    console.log(`load average at end ${load()}`);
  } finally {
    await stopHogs(hogs);
    for (const fx of fixtures) await fx.kill();
    fs.rmSync(work, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
