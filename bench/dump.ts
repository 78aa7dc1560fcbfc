// Dump and restore benchmark: how fast is a dump of a process with SIZE of
// anonymous memory (default 1 GiB), next to this machine's own memcpy
// bandwidth, and how fast is its restore?
//
//   npx tsc -p . && node dist/bench/dump.js [--size-mib N] [--runs N] [--no-restore]
//
// Each run dumps the live bigmem process (-R: left running, that is the dump
// time); then, for the restore columns, that process is killed and reaped and
// the dump is restored (timed): the restored process is the one the next run
// dumps. Prints a table; never asserts timings. Images go to a temporary
// directory removed afterwards; at the end bigmem checks every page it wrote
// (after all those restores) and is reaped.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { Fixture, initHarness, tmpDir, procStatus, ROOT } from '../test/harness';
import { dump, type DumpResult } from '../src/dump/dump';
import { restore } from '../src/restore/restore';
import { tryKill, abi } from '../src/sys';

const { values } = parseArgs({
  options: {
    'size-mib': { type: 'string', default: '1024' },
    runs: { type: 'string', default: '3' },
    'no-restore': { type: 'boolean', default: false },
  },
});
const SIZE_MIB = Number(values['size-mib']);
const RUNS = Number(values.runs);
if (!(SIZE_MIB > 0) || !(RUNS > 0)) throw new Error('--size-mib and --runs must be positive numbers');

const GB = 1e9;

/** Median of a non-empty list. */
function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

function memcpyBandwidth(): { best: number; median: number } {
  const size = 256 << 20;
  const src = Buffer.allocUnsafe(size);
  const dst = Buffer.allocUnsafe(size);
  src.fill(0x5a); // fault both in before timing
  dst.fill(0xa5);
  src.copy(dst); // warm-up
  const rates: number[] = [];
  for (let i = 0; i < 6; i++) {
    const t0 = process.hrtime.bigint();
    src.copy(dst);
    const s = Number(process.hrtime.bigint() - t0) / 1e9;
    rates.push(size / s / GB);
  }
  return { best: Math.max(...rates), median: median(rates) };
}

/**
 * Extra measurements per run, shown as extra columns (one measure may fill
 * several, printed with `digits` decimals): each gets the images dir of the
 * run's dump and its result.
 */
interface Column {
  names: string[];
  digits: number[];
  measure(dir: string, r: DumpResult): Promise<(number | undefined)[]>;
}

let fx: Fixture | undefined;

/**
 * Restore: kill and reap the dumped (still running) process, restore its
 * images, and carry on with the restored one. Time: restore() from reading
 * the images to the task let go; GB/s: the dump's page bytes / that time.
 */
const restoreColumns: Column = {
  names: ['restore ms', 'restore GB/s'],
  digits: [1, 2],
  async measure(dir, r) {
    const live = fx!;
    tryKill(live.pid, abi.SIG.SIGKILL);
    await live.reap(10000);
    const res = restore({ dir, detach: true });
    if (res.pid !== live.pid) throw new Error(`restored pid ${res.pid}, expected ${live.pid}`);
    live.restored();
    return [res.ms, r.bytes / (res.ms / 1000) / GB];
  },
};

const extraColumns: Column[] = values['no-restore'] ? [] : [restoreColumns];

interface Row {
  run: string;
  r: DumpResult;
  extra: (number | undefined)[];
}

function fmtRow(cells: string[], widths: number[]): string {
  return cells.map((c, i) => c.padStart(widths[i])).join('  ');
}

async function main(): Promise<void> {
  initHarness();
  const work = tmpDir('bench');
  try {
    console.log(`stasis dump${extraColumns.length ? ' and restore' : ''} benchmark: ${SIZE_MIB} MiB of anonymous memory, ${RUNS} runs after a warm-up`);
    fx = await Fixture.start('bigmem', {
      srcDir: path.join(ROOT, 'bench', 'fixtures'),
      outDir: path.join(ROOT, 'dist', 'bench-bin'),
      args: [String(SIZE_MIB)],
      readyTimeoutMs: 120000,
    });
    const rssKiB = Number(/(\d+)/.exec(procStatus(fx.pid).get('VmRSS') ?? '0')![1]);
    console.log(`bigmem pid ${fx.pid}, RSS ${(rssKiB / 1024).toFixed(0)} MiB`);

    const mc = memcpyBandwidth();
    console.log(`memcpy (Buffer.copy of 256 MiB): best ${mc.best.toFixed(2)} GB/s, median ${mc.median.toFixed(2)} GB/s`);

    const rows: Row[] = [];
    for (let i = 0; i <= RUNS; i++) {
      const dir = path.join(work, `run${i}`);
      const r = dump(fx.pid, { dir, leaveRunning: true });
      const extra: (number | undefined)[] = [];
      for (const c of extraColumns) extra.push(...await c.measure(dir, r));
      fs.rmSync(dir, { recursive: true, force: true });
      rows.push({ run: i === 0 ? 'warm-up' : String(i), r, extra });
    }

    const extraNames = extraColumns.flatMap((c) => c.names);
    const extraDigits = extraColumns.flatMap((c) => c.digits);
    const head = ['run', 'size MiB', 'dump ms', 'frozen ms', 'pages GB/s', 'memcpy GB/s', 'ratio', ...extraNames];
    const body = rows.map(({ run, r, extra }) => {
      const gbs = r.bytes / (r.ms / 1000) / GB;
      return [
        run, (r.bytes / 1048576).toFixed(0), r.ms.toFixed(1), r.frozenMs.toFixed(1), gbs.toFixed(2),
        mc.median.toFixed(2), (gbs / mc.median).toFixed(2), ...extra.map((x, i) => (x === undefined ? '-' : x.toFixed(extraDigits[i]))),
      ];
    });
    const timed = rows.slice(1).map((x) => x.r);
    const extraMedians = extraNames.map((_n, i) => {
      const xs = rows.slice(1).map((x) => x.extra[i]).filter((x): x is number => x !== undefined);
      return xs.length ? median(xs).toFixed(extraDigits[i]) : '-';
    });
    const medMs = median(timed.map((r) => r.ms));
    const medGbs = median(timed.map((r) => r.bytes / (r.ms / 1000) / GB));
    body.push([
      'median', (timed[0].bytes / 1048576).toFixed(0), medMs.toFixed(1), median(timed.map((r) => r.frozenMs)).toFixed(1),
      medGbs.toFixed(2), mc.median.toFixed(2), (medGbs / mc.median).toFixed(2), ...extraMedians,
    ]);
    const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
    console.log('');
    console.log(fmtRow(head, widths));
    console.log(widths.map((w) => '-'.repeat(w)).join('  '));
    for (const b of body) console.log(fmtRow(b, widths));
    console.log('');
    console.log('pages GB/s = page bytes written / dump time (dump -R); ratio = that / memcpy median.');
    if (extraColumns.length) {
      console.log('restore ms = restore of that dump (after the dumped process was killed and reaped), images read to');
      console.log('task detached; restore GB/s = the same page bytes / restore time. The restored process is the next run\'s.');
    }

    const { log } = await fx.terminate(60000);
    const restores = extraColumns.length ? ` and ${RUNS + 1} restores` : '';
    console.log(`bigmem self-check after ${RUNS + 1} dumps${restores}: ${/^PASS$/m.test(log) ? 'PASS' : log.trim()}`);
  } finally {
    await fx?.kill();
    fs.rmSync(work, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
