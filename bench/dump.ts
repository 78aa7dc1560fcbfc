// Dump benchmark: how fast is a dump of a process with SIZE of anonymous
// memory (default 1 GiB), next to this machine's own memcpy bandwidth?
//
//   npx tsc -p . && node dist/bench/dump.js [--size-mib N] [--runs N]
//
// Prints a table; never asserts timings. Images go to a temporary directory
// removed afterwards; the bigmem process is killed and reaped at the end.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { Fixture, initHarness, tmpDir, procStatus, ROOT } from '../test/harness';
import { dump, type DumpResult } from '../src/dump/dump';

const { values } = parseArgs({
  options: {
    'size-mib': { type: 'string', default: '1024' },
    runs: { type: 'string', default: '3' },
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
 * Extra measurements per run, shown as extra columns. The restore side plugs
 * in here: e.g. { name: 'restore ms', measure: (dir, r) => timeRestore(dir, r.pid) }
 * (the dump must then not be -R, or the restored process needs its pid free).
 */
interface Column {
  name: string;
  measure(dir: string, r: DumpResult): number | undefined;
}
const extraColumns: Column[] = [];

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
  let fx: Fixture | undefined;
  try {
    console.log(`stasis dump benchmark: ${SIZE_MIB} MiB of anonymous memory, ${RUNS} runs after a warm-up`);
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
      const extra = extraColumns.map((c) => c.measure(dir, r));
      fs.rmSync(dir, { recursive: true, force: true });
      rows.push({ run: i === 0 ? 'warm-up' : String(i), r, extra });
    }

    const head = ['run', 'size MiB', 'dump ms', 'frozen ms', 'pages GB/s', 'memcpy GB/s', 'ratio', ...extraColumns.map((c) => c.name)];
    const body = rows.map(({ run, r, extra }) => {
      const gbs = r.bytes / (r.ms / 1000) / GB;
      return [
        run, (r.bytes / 1048576).toFixed(0), r.ms.toFixed(1), r.frozenMs.toFixed(1), gbs.toFixed(2),
        mc.median.toFixed(2), (gbs / mc.median).toFixed(2), ...extra.map((x) => (x === undefined ? '-' : x.toFixed(1))),
      ];
    });
    const timed = rows.slice(1).map((x) => x.r);
    const medMs = median(timed.map((r) => r.ms));
    const medGbs = median(timed.map((r) => r.bytes / (r.ms / 1000) / GB));
    body.push([
      'median', (timed[0].bytes / 1048576).toFixed(0), medMs.toFixed(1), median(timed.map((r) => r.frozenMs)).toFixed(1),
      medGbs.toFixed(2), mc.median.toFixed(2), (medGbs / mc.median).toFixed(2), ...extraColumns.map(() => '-'),
    ]);
    const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
    console.log('');
    console.log(fmtRow(head, widths));
    console.log(widths.map((w) => '-'.repeat(w)).join('  '));
    for (const b of body) console.log(fmtRow(b, widths));
    console.log('');
    console.log('pages GB/s = page bytes written / dump time; ratio = that / memcpy median.');

    const { log } = await fx.terminate(60000);
    console.log(`bigmem self-check after ${RUNS + 1} dumps: ${/^PASS$/m.test(log) ? 'PASS' : log.trim()}`);
  } finally {
    await fx?.kill();
    fs.rmSync(work, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
