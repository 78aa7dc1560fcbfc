// Pre-dump benchmark: a process with SIZE of anonymous memory (default 1 GiB,
// the predump fixture), of which ~10% is rewritten after a pre-dump. Compares
// the final dump made on the pre-dump (--prev-images-dir) with a full dump of
// the same process: time frozen and wall time, against issue 15's targets
// (frozen <= 0.1x, wall <= 0.3x of a full dump). Both dumps end as a final
// dump does (the process killed): the full one on a second process built the
// same way. The last run's process is then restored from the incremental dump
// and checks every byte of its memory.
//
// --pre-copy: the final dump makes its own copy round first (dump --pre-copy,
// dump/precopy.ts); its frozen time then counts both freezes.
//
//   npx tsc -p . && node dist/bench/predump.js [--size-mib N] [--runs N] [--pre-copy]
//
// Prints a table; never asserts timings.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { Fixture, initHarness, tmpDir, restoreDetached } from '../test/harness';
import { dump, type DumpResult } from '../src/dump/dump';
import { preDump } from '../src/dump/predump';
import { dumpWithPreCopy } from '../src/dump/precopy';
import { tryKill, abi } from '../src/sys';

const { values } = parseArgs({
  options: { 'size-mib': { type: 'string', default: '1024' }, runs: { type: 'string', default: '3' }, 'pre-copy': { type: 'boolean', default: false } },
});
const PRECOPY = values['pre-copy'];
const SIZE_MIB = Number(values['size-mib']);
const RUNS = Number(values.runs);
if (!(SIZE_MIB > 0) || !(RUNS > 0)) throw new Error('--size-mib and --runs must be positive numbers');

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

interface Run { full: DumpResult; pre: DumpResult; inc: DumpResult }

async function start(): Promise<Fixture> {
  return Fixture.start('predump', { args: [String(SIZE_MIB)], readyTimeoutMs: 120000 });
}

async function oneRun(root: string, i: number, last: boolean): Promise<Run> {
  const dir = (n: string) => path.join(root, `run${i}-${n}`);
  // The full dump, of a process of its own (it is killed, as by a final dump).
  const other = await start();
  let full: DumpResult;
  try {
    full = dump(other.pid, { dir: dir('full'), leaveRunning: false }); // killed and reaped by the dump (our tracee)
  } finally {
    await other.kill();
    fs.rmSync(dir('full'), { recursive: true, force: true });
  }
  const fx = await start();
  try {
    const pre = preDump(fx.pid, { dir: dir('pre') });
    tryKill(fx.pid, abi.SIG.SIGUSR1); // every 10th page rewritten (+ a few others)
    await fx.waitLog(/^STEP 1$/m, 60000);
    const inc = dumpWithPreCopy(fx.pid, { dir: dir('inc'), leaveRunning: false, prevImagesDir: `../run${i}-pre`, preCopy: PRECOPY }); // killed and reaped
    if (last) {
      restoreDetached(dir('inc'));
      fx.restored();
      const { log } = await fx.terminate(120000);
      if (!/^PASS$/m.test(log)) throw new Error(`the process restored from the incremental dump failed its check:\n${log}`);
      console.log(`run ${i}: restored from the incremental dump; every byte of ${SIZE_MIB} MiB checked: PASS`);
    }
    for (const n of ['pre', 'inc']) fs.rmSync(dir(n), { recursive: true, force: true });
    return { full, pre, inc };
  } finally {
    await fx.kill();
  }
}

async function main(): Promise<void> {
  initHarness();
  const root = tmpDir('bench-predump');
  const runs: Run[] = [];
  try {
    for (let i = 0; i < RUNS; i++) runs.push(await oneRun(root, i, i === RUNS - 1));
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
  const MiB = (b: number) => (b / 1048576).toFixed(1);
  console.log(`\n${SIZE_MIB} MiB, ~10% rewritten after the pre-dump; final dump ${PRECOPY ? "with its own copy round (--pre-copy)" : "in one frozen pass"}; ${RUNS} run(s), medians (ms)\n`);
  console.log('dump          frozen      wall   copied MiB');
  for (const k of ['full', 'pre', 'inc'] as const) {
    const name = { full: 'full dump', pre: 'pre-dump', inc: 'incremental' }[k];
    console.log(`${name.padEnd(12)} ${median(runs.map((r) => r[k].frozenMs)).toFixed(1).padStart(7)} ${median(runs.map((r) => r[k].ms)).toFixed(1).padStart(9)} ${MiB(median(runs.map((r) => r[k].bytes))).padStart(11)}`);
  }
  const frozen = median(runs.map((r) => r.inc.frozenMs / r.full.frozenMs));
  const wall = median(runs.map((r) => r.inc.ms / r.full.ms));
  console.log(`\nincremental / full: frozen ${frozen.toFixed(3)}x (target <= 0.1x: ${frozen <= 0.1 ? 'met' : 'NOT met'}), wall ${wall.toFixed(3)}x (target <= 0.3x: ${wall <= 0.3 ? 'met' : 'NOT met'})`);
  const steps = (r: DumpResult) => Object.entries(r.timings).filter(([, ms]) => ms >= 1).map(([k, ms]) => `${k} ${ms.toFixed(1)}`).join(', ');
  console.log(`last run, steps over 1 ms — full: ${steps(runs.at(-1)!.full)}\n  incremental: ${steps(runs.at(-1)!.inc)}\n  pre-dump: ${steps(runs.at(-1)!.pre)}`);
}

main().catch((e) => { console.error(e); process.exit(1); });
