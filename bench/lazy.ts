// Lazy restore benchmark: time to answer, eager vs --lazy-pages. The lazy
// fixture (solo: no child) with SIZE of patterned memory (default 1 GiB) is
// dumped once; then, alternately, `stasis restore -d` and `stasis restore -d
// --lazy-pages` of it, through the command line as a user would. Measured
// from the start of the command: until it returns, until the process answers
// a probe (SIGUSR1: it reports how many of its pages are in, and read()s into
// a lazy page), and (lazy) until the detached server has every page in and
// exits. Each restored process then checks every byte of its memory (PASS).
//
//   npm run build && node dist/bench/lazy.js [--size-mib N] [--runs N]
//
// Prints a table; never asserts timings.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { Fixture, initHarness, tmpDir, runStasis, describeCli, reap } from '../test/harness';
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

interface Run { command: number; answer: number; allIn?: number; resident: number; total: number; timings: Record<string, number>; ms: number }

const now = () => Number(process.hrtime.bigint()) / 1e6;

async function restoreOnce(fx: Fixture, dir: string, dumpedLog: number, lazy: boolean, verify: boolean): Promise<Run> {
  // The log as it was at the dump (its size is checked, and the probe line must be new).
  fs.truncateSync(fx.logPath, dumpedLog);
  const t0 = now();
  const r = runStasis(['restore', '-D', dir, '-d', '--json', ...(lazy ? ['--lazy-pages'] : []), ...(verify ? [] : ['--no-verify'])], {}, 600000);
  const command = now() - t0;
  if (r.status !== 0) throw new Error(`restore failed: ${describeCli(r)}`);
  const j = JSON.parse(r.stdout.trim().split('\n')[0]) as { ms: number; timings: Record<string, number>; lazy?: { server: number } };
  fx.restored();
  tryKill(fx.pid, abi.SIG.SIGUSR1);
  let m: RegExpExecArray | null = null;
  while (!(m = /^PROBE 1 resident=(\d+) total=(\d+) read=(\w+)$/m.exec(fx.log()))) await sleep(1);
  const answer = now() - t0;
  if (m[3] !== 'ok') throw new Error(`the probe's read() into lazy memory failed:\n${fx.log()}`);
  let allIn: number | undefined;
  if (lazy) {
    const server = j.lazy!.server;
    await reap(server, 600000);
    allIn = now() - t0;
  }
  const { log } = await fx.terminate(600000);
  if (!/^PASS$/m.test(log)) throw new Error(`the restored process failed its check:\n${log}`);
  return { command, answer, allIn, resident: Number(m[1]), total: Number(m[2]), timings: j.timings, ms: j.ms };
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
    const row = (name: string, rs: Run[]) => `  ${name.padEnd(18)}${f(median(rs.map((r) => r.command)))}${f(median(rs.map((r) => r.answer)))}` +
      `${rs[0].allIn === undefined ? '         -' : f(median(rs.map((r) => r.allIn!)))}   ${rs.map((r) => `${r.resident}/${r.total}`).join(' ')}`;
    console.log(`lazy restore, ${SIZE_MIB} MiB, ${RUNS} run(s), medians in ms from the start of \`stasis restore -d\`:`);
    console.log(`  ${'restore'.padEnd(18)}${'returns'.padStart(10)}${'answers'.padStart(10)}${'all in'.padStart(10)}   pages in at the answer (each run)`);
    console.log(row('eager', eager));
    console.log(row('--lazy-pages', lazy));
    console.log(row('eager, no-verify', eagerNv));
    console.log(row('lazy, no-verify', lazyNv));
    const ratio = (a: Run[], b: Run[]) => (median(a.map((r) => r.answer)) / median(b.map((r) => r.answer))).toFixed(3);
    console.log(`  time to answer, lazy / eager: ${ratio(lazy, eager)}x (digest checked), ${ratio(lazyNv, eagerNv)}x (--no-verify); every restored process checked all its memory: PASS`);
    // Where a lazy restore's time to answer goes: the command's own start and spawn of the
    // detached server (returns - the server's start-up and restore), then the server's steps.
    const last = lazy[lazy.length - 1];
    const server = (last.timings['start-up'] ?? 0) + (last.timings.modules ?? 0) + last.ms;
    const steps = Object.entries(last.timings).filter(([, v]) => v >= 1).map(([k, v]) => `${k} ${v.toFixed(1)}`).join(', ');
    console.log(`  --lazy-pages, last run: returns ${last.command.toFixed(1)} = the command's start-up, spawn and report ${(last.command - server).toFixed(1)} + the server ${server.toFixed(1)} (${steps})`);
  } finally {
    await fx.kill();
    fs.rmSync(root, { recursive: true, force: true });
  }
}

main().catch((e) => { console.error(e); process.exitCode = 1; });
