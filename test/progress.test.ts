// The progress line on a terminal: a dump and a restore of a 96 MiB process
// run under a pseudo-terminal (script(1)) show it, redrawn in place with the
// phase and pages done/total, and erased before the final line (which gives
// the images' size); without a terminal, or with --json, nothing of it. The
// test makes the line appear at once and redraw at every chunk
// (STASIS_PROGRESS_AFTER_MS/EVERY_MS = 0), so nothing depends on how fast
// the machine is.
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { Fixture, initHarness, runStasis, describeCli, tmpDir, waitFor, ROOT, STASIS } from './harness';

const MIB = 96;
const PAGES = (MIB << 20) / 4096;
const NOW = { STASIS_PROGRESS_AFTER_MS: '0', STASIS_PROGRESS_EVERY_MS: '0' };
let fx: Fixture;
let root: string;

before(async () => {
  initHarness();
  root = tmpDir('progress');
  fx = await Fixture.start('bigmem', { srcDir: path.join(ROOT, 'bench', 'fixtures'), outDir: path.join(ROOT, 'dist', 'bench-bin'), args: [String(MIB)], readyTimeoutMs: 60000 });
});

after(async () => {
  await fx?.kill();
  fs.rmSync(root, { recursive: true, force: true });
});

const quote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

/** stasis ARGS on a pseudo-terminal: what the terminal got (stdout and stderr, \n as \r\n). */
function onTty(args: string[]): { status: number | null; out: string } {
  const cmd = [process.execPath, STASIS, ...args].map(quote).join(' ');
  const r = spawnSync('script', ['-qec', cmd, '/dev/null'], { env: { ...process.env, ...NOW }, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 120000 });
  if (r.error) throw r.error;
  return { status: r.status, out: r.stdout };
}

/** The progress lines drawn: [phase, done, total] of each, in order. */
function drawn(out: string, verb: string): [string, number, number][] {
  const re = new RegExp(`\\rstasis ${verb}: (\\S+)(?: {2}(\\d+)/(\\d+) pages \\(\\d+%\\)(?: {2}\\d+ MB/s)?)?\\x1b\\[K`, 'g');
  return [...out.matchAll(re)].map((m) => [m[1], Number(m[2] ?? 0), Number(m[3] ?? 0)]);
}

test('dump and restore of 96 MiB on a terminal show the progress line, then the final line with the images\' size', async () => {
  const dir = path.join(root, 'tty');
  const d = onTty(['dump', '-t', String(fx.pid), '-D', dir]);
  assert.equal(d.status, 0, d.out);
  await fx.reap(10000);
  const lines = drawn(d.out, 'dump');
  const phases = lines.map((l) => l[0]);
  for (const p of ['freeze', 'parasite', 'memory', 'commit', 'kill']) assert.ok(phases.includes(p), `phase ${p} shown: ${phases.join(' ')}`);
  const mem = lines.filter((l) => l[0] === 'memory' && l[1] > 0);
  assert.ok(mem.length >= 2, `pages shown as they are copied: ${JSON.stringify(mem)}`);
  for (let i = 1; i < mem.length; i++) assert.ok(mem[i][1] >= mem[i - 1][1], 'pages done only grow');
  const last = mem[mem.length - 1];
  assert.ok(last[1] >= PAGES && last[1] <= last[2], `every page of the 96 MiB read, within the total: ${last}`);
  // Erased, then the final line as without a terminal, with the images' size.
  const size = fs.readdirSync(dir).reduce((a, f) => a + fs.statSync(path.join(dir, f)).size, 0);
  const fin = new RegExp(`\\r\\x1b\\[Kdumped pid ${fx.pid} \\(1 process, 1 thread\\): (\\d+) pages \\([0-9.]+ MiB\\) in [0-9.]+ ms, frozen [0-9.]+ ms; images ${(size / 1048576).toFixed(1)} MiB; killed\\r\\n$`).exec(d.out);
  assert.ok(fin, `the final line after the erased progress line: ${JSON.stringify(d.out.slice(-200))}`);
  const written = Number(fin[1]);
  assert.ok(written >= PAGES && written <= last[1], `${written} pages written, of ${last[1]} read`);

  const r = onTty(['restore', '-d', '-D', dir]);
  assert.equal(r.status, 0, r.out);
  fx.restored();
  await waitFor(`pid ${fx.pid} restored`, () => fs.existsSync(`/proc/${fx.pid}`), 10000);
  const rl = drawn(r.out, 'restore');
  assert.ok(rl.some((l) => l[0] === 'verify'), `verify shown: ${rl.map((l) => l[0]).join(' ')}`);
  const pages = rl.filter((l) => l[0] === 'pages' && l[1] > 0);
  assert.ok(pages.length >= 2, `pages shown: ${JSON.stringify(pages)}`);
  assert.deepEqual(pages[pages.length - 1].slice(1), [written, written], 'every page written, of as many');
  assert.match(r.out, new RegExp(`\\r\\x1b\\[Krestored pid ${fx.pid} in [0-9.]+ ms; images ${(size / 1048576).toFixed(1)} MiB\\r\\n$`));
});

test('no progress line without a terminal, nor with --json on one', async () => {
  const dir = path.join(root, 'pipe');
  const d = runStasis(['dump', '-t', String(fx.pid), '-D', dir], NOW);
  assert.equal(d.status, 0, describeCli(d));
  await fx.reap(10000);
  assert.match(d.stderr, new RegExp(`^dumped pid ${fx.pid} \\(1 process, 1 thread\\): \\d+ pages .*; killed\\n$`));
  const r = onTty(['restore', '-d', '-D', dir, '--json']);
  assert.equal(r.status, 0, r.out);
  fx.restored();
  assert.doesNotMatch(r.out, /\r(?!\n)|stasis restore:/, 'no progress with --json');
  assert.equal(JSON.parse(r.out.trim()).pid, fx.pid);
  await waitFor(`pid ${fx.pid} restored`, () => fs.existsSync(`/proc/${fx.pid}`), 10000);
  const { log } = await fx.terminate(30000);
  assert.match(log, /^PASS$/m, 'the 96 MiB came back whole twice');
});
