// Lazy restore benchmark: time to answer, eager vs --lazy-pages. The lazy
// fixture (solo: no child) with SIZE of patterned memory (default 1 GiB) is
// dumped once; then, alternately, `stasis restore -d` and `stasis restore -d
// --lazy-pages` of it, through the command line as a user would. Measured
// from the start of the command: until it prints its result line (the pid
// restored: the earliest a probe can be sent), until the process answers
// the probe sent then (SIGUSR1: it reports how many of its pages are in, and
// read()s into a lazy page), until the command returns, and (lazy) until
// the server has every page in and exits. Each restored process then checks
// every byte of its memory (PASS).
//
//   npm run build && node dist/bench/lazy.js [--size-mib N] [--runs N]
//
// Prints a table; never asserts timings.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { spawn } from 'node:child_process';
import { Fixture, initHarness, tmpDir, runStasis, describeCli, reap, STASIS } from '../test/harness';
import { tryKill, abi } from '../src/sys';

const { values } = parseArgs({
  options: { 'size-mib': { type: 'string', default: '1024' }, runs: { type: 'string', default: '3' } },
});
const SIZE_MIB = Number(values['size-mib']);
const RUNS = Number(values.runs);
if (!(SIZE_MIB > 0) || !(RUNS > 0)) throw new Error('--size-mib and --runs must be positive numbers');

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

interface Run { command: number; said: number; answer: number; allIn?: number; resident: number; total: number; timings: Record<string, number>; ms: number }

const now = () => Number(process.hrtime.bigint()) / 1e6;

/**
 * `stasis restore -D dir -d --json [--lazy-pages]`, as a user would start it:
 * resolves with the time its result line came (the restored pid is known
 * then: the earliest a probe can be sent), the line, and its exit.
 */
function startRestore(args: string[], t0: number): Promise<{ said: number; line: string; exited: Promise<{ code: number | null; at: number; stderr: string }> }> {
  const child = spawn(STASIS, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '', err = '';
  const exited = new Promise<{ code: number | null; at: number; stderr: string }>((resolve) => child.on('exit', (code) => resolve({ code, at: now() - t0, stderr: err })));
  child.stderr!.on('data', (d: Buffer) => { err += d.toString(); });
  return new Promise((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const i = out.indexOf('\n');
      if (i >= 0 && !out.startsWith('\u0000')) { resolve({ said: now() - t0, line: out.slice(0, i), exited }); out = '\u0000'; }
    });
    void exited.then((e) => reject(new Error(`restore exited ${e.code} before its result line: ${e.stderr}`)));
  });
}

async function restoreOnce(fx: Fixture, dir: string, dumpedLog: number, lazy: boolean, verify: boolean): Promise<Run> {
  // The log as it was at the dump (its size is checked, and the probe line must be new).
  fs.truncateSync(fx.logPath, dumpedLog);
  const t0 = now();
  const started = await startRestore(['restore', '-D', dir, '-d', '--json', ...(lazy ? ['--lazy-pages'] : []), ...(verify ? [] : ['--no-verify'])], t0);
  const j = JSON.parse(started.line) as { ms: number; timings: Record<string, number>; lazy?: { server: number }; error?: unknown };
  if (j.error) throw new Error(`restore failed: ${started.line}`);
  fx.restored();
  tryKill(fx.pid, abi.SIG.SIGUSR1);
  let m: RegExpExecArray | null = null;
  while (!(m = /^PROBE 1 resident=(\d+) total=(\d+) read=(\w+)$/m.exec(fx.log()))) await sleep(1);
  const answer = now() - t0;
  if (m[3] !== 'ok') throw new Error(`the probe's read() into lazy memory failed:\n${fx.log()}`);
  const ex = await started.exited;
  if (ex.code !== 0) throw new Error(`restore exited ${ex.code}: ${ex.stderr}`);
  let allIn: number | undefined;
  if (lazy) {
    await reap(j.lazy!.server, 600000);
    allIn = now() - t0;
  }
  const { log } = await fx.terminate(600000);
  if (!/^PASS$/m.test(log)) throw new Error(`the restored process failed its check:\n${log}`);
  return { command: ex.at, said: started.said, answer, allIn, resident: Number(m[1]), total: Number(m[2]), timings: j.timings, ms: j.ms };
}

async function main(): Promise<void> {
  initHarness();
  const root = tmpDir('bench-lazy');
  const fx = await Fixture.start('lazy', { args: [String(SIZE_MIB), 'solo'], pthread: true, readyTimeoutMs: 120000 });
  try {
    const dir = path.join(root, 'img');
    const d = runStasis(['dump', '-t', String(fx.pid), '-D', dir], {}, 600000);
    if (d.status !== 0) throw new Error(`dump failed: ${describeCli(d)}`);
    await fx.reap();
    const dumpedLog = fs.statSync(fx.logPath).size;
    // The digest check reads every page before anything is created, lazy or not: shown with and without.
    const eager: Run[] = [], lazy: Run[] = [], eagerNv: Run[] = [], lazyNv: Run[] = [];
    for (let i = 0; i < RUNS; i++) {
      eager.push(await restoreOnce(fx, dir, dumpedLog, false, true));
      lazy.push(await restoreOnce(fx, dir, dumpedLog, true, true));
      eagerNv.push(await restoreOnce(fx, dir, dumpedLog, false, false));
      lazyNv.push(await restoreOnce(fx, dir, dumpedLog, true, false));
    }
    const f = (x: number) => x.toFixed(1).padStart(10);
    const med = (rs: Run[], k: (r: Run) => number) => f(median(rs.map(k)));
    const row = (name: string, rs: Run[]) => `  ${name.padEnd(18)}${med(rs, (r) => r.said)}${med(rs, (r) => r.answer)}${med(rs, (r) => r.command)}` +
      `${rs[0].allIn === undefined ? '         -' : med(rs, (r) => r.allIn!)}   ${rs.map((r) => `${r.resident}/${r.total}`).join(' ')}`;
    console.log(`lazy restore, ${SIZE_MIB} MiB, ${RUNS} run(s), medians in ms from the start of \`stasis restore -d --json\`:`);
    console.log(`  ${'restore'.padEnd(18)}${'pid said'.padStart(10)}${'answers'.padStart(10)}${'returns'.padStart(10)}${'all in'.padStart(10)}   pages in at the answer (each run)`);
    console.log(row('eager', eager));
    console.log(row('--lazy-pages', lazy));
    console.log(row('eager, no-verify', eagerNv));
    console.log(row('lazy, no-verify', lazyNv));
    const ratio = (a: Run[], b: Run[]) => (median(a.map((r) => r.answer)) / median(b.map((r) => r.answer))).toFixed(3);
    console.log(`  time to answer, lazy / eager: ${ratio(lazy, eager)}x (digest checked), ${ratio(lazyNv, eagerNv)}x (--no-verify); every restored process checked all its memory: PASS`);
    // Where a lazy restore's time to answer goes: node's start and the modules, then the restore's steps.
    const last = lazy[lazy.length - 1];
    const steps = Object.entries(last.timings).filter(([, v]) => v >= 1).map(([k, v]) => `${k} ${v.toFixed(1)}`).join(', ');
    console.log(`  --lazy-pages, last run: pid said at ${last.said.toFixed(1)} (${steps}); the probe answered at ${last.answer.toFixed(1)}`);
  } finally {
    await fx.kill();
    fs.rmSync(root, { recursive: true, force: true });
  }
}

main().catch((e) => { console.error(e); process.exitCode = 1; });
