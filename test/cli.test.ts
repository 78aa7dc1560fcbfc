// The command line as a user meets it: help and version, one-line errors
// (also as JSON), sizes with suffixes, a log of every step in the images
// directory, --json results, restore --pidfile.
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Fixture, initHarness, runStasis, describeCli, tmpDir, reapZombies, waitGone } from './harness';
import { COMMANDS } from '../src/cli/commands';

let root: string;
before(() => { initHarness(); root = tmpDir('cli'); });
after(() => fs.rmSync(root, { recursive: true, force: true }));

test('--version and every command\'s --help exit 0 and list the options', () => {
  const v = runStasis(['--version']);
  assert.equal(v.status, 0);
  assert.match(v.stdout, /^stasis \d+\.\d+\.\d+\n$/);
  for (const c of COMMANDS) {
    const r = runStasis([c.name, '--help']);
    assert.equal(r.status, 0, describeCli(r));
    for (const o of c.options) assert.ok(r.stdout.includes(`--${o.long}`), `${c.name} --help lists --${o.long}`);
  }
  const top = runStasis(['--help']);
  assert.equal(top.status, 0);
  for (const c of COMMANDS) assert.match(top.stdout, new RegExp(`stasis ${c.name}\\b`));
});

test('usage errors: one line, exit 2; with --json also a JSON error with its code', () => {
  const r = runStasis(['dump', '-t', 'nope', '-D', root]);
  assert.equal(r.status, 2);
  assert.deepEqual(r.stderr.trim().split('\n'), ["stasis: invalid pid 'nope' (see stasis --help)"]);
  const j = runStasis(['dump', '-t', '999999999', '-D', path.join(root, 'x'), '--json']);
  assert.equal(j.status, 1, describeCli(j));
  assert.deepEqual(JSON.parse(j.stdout), { error: { code: 'STASIS_NO_SUCH_PROCESS', message: 'no process with pid 999999999' } });
  assert.equal(j.stderr.trim().split('\n').length, 1);
  const unk = runStasis(['frobnicate']);
  assert.equal(unk.status, 2);
  assert.match(unk.stderr, /^stasis: unknown command 'frobnicate' \(see stasis --help\)\n$/);
});

test('dump and restore with --json, -o log in the images dir at -v4, --pidfile, --ghost-limit with a suffix', async () => {
  const fx = await Fixture.start('counter');
  try {
    const dir = path.join(root, 'images');
    const d = runStasis(['dump', '-t', String(fx.pid), '-D', dir, '--json', '-o', 'dump.log', '-v4', '--ghost-limit', '4K']);
    assert.equal(d.status, 0, describeCli(d));
    const res = JSON.parse(d.stdout);
    assert.equal(res.pid, fx.pid);
    assert.ok(res.pages > 0 && res.bytes === res.pages * 4096 && res.frozenMs > 0 && res.ms >= res.frozenMs && res.imagesBytes > res.bytes);
    assert.ok(res.timings.parasite > 0 && res.timings.memory > 0, 'per-step timings');
    assert.equal(d.stderr, '', 'nothing on stderr with --json');
    const log = fs.readFileSync(path.join(dir, 'dump.log'), 'utf8');
    assert.match(log, /Info  memory done in [\d.]+ ms/);
    assert.match(log, new RegExp(`Info  dumped pid ${fx.pid} `));
    await fx.reap();
    await waitGone([fx.pid]);
    const r = runStasis(['restore', '-D', dir, '-d', '--json', '--pidfile', 'restored.pid', '-o', 'restore.log', '-v3']);
    assert.equal(r.status, 0, describeCli(r));
    fx.restored();
    const rr = JSON.parse(r.stdout);
    assert.equal(rr.pid, fx.pid);
    assert.deepEqual(rr.pids, [fx.pid]);
    assert.equal(fs.readFileSync(path.join(dir, 'restored.pid'), 'utf8'), `${fx.pid}\n`);
    assert.match(fs.readFileSync(path.join(dir, 'restore.log'), 'utf8'), /Info  pages done in/);
    await fx.assertCounting();
  } finally {
    await fx.kill();
    reapZombies();
  }
});

/** Top-level steps (no "."), and the parts of `step` ("step.part"). */
const topLevel = (t: Record<string, number>) => Object.entries(t).filter(([k]) => !k.includes('.'));
const partsOf = (t: Record<string, number>, step: string) => Object.entries(t).filter(([k]) => k.startsWith(`${step}.`));
const sum = (xs: [string, number][]) => xs.reduce((a, [, v]) => a + v, 0);

/** The breakdown is there, in order, every value a duration, and the steps add up to the whole. */
function checkBreakdown(t: Record<string, number>, ms: number, first: string[], last: string): void {
  for (const [k, v] of Object.entries(t)) assert.ok(Number.isFinite(v) && v >= 0, `${k}: ${v}`);
  const top = topLevel(t);
  assert.deepEqual(top.slice(0, first.length).map(([k]) => k), first);
  assert.equal(top[top.length - 1][0], last);
  // The library's steps (all but this process's start-up and module loading) lie within its `ms`...
  const steps = top.filter(([k]) => k !== 'start-up' && k !== 'modules');
  assert.ok(sum(steps) <= ms + 0.01, `steps add up to ${sum(steps)} ms, more than the whole ${ms} ms`);
  // ...and cover most of it: nothing slow runs untimed between them.
  assert.ok(sum(steps) >= ms / 2, `steps add up to ${sum(steps)} ms of ${ms} ms`);
}

test('--timings: each step of a dump and a restore in ms (the parasite\'s by unit), start-up first, in --json too', async () => {
  const fx = await Fixture.start('counter');
  try {
    const dir = path.join(root, 'timings');
    const d = runStasis(['dump', '-t', String(fx.pid), '-D', dir, '--timings']);
    assert.equal(d.status, 0, describeCli(d));
    const lines = d.stderr.trim().split('\n');
    assert.equal(lines[0], 'dump timings (ms):');
    for (const name of ['start-up', 'modules', 'freeze', 'parasite', '  batch', '  memory', 'memory', 'write-core', 'commit', 'kill']) {
      assert.ok(lines.some((l) => new RegExp(`^  ${name} +\\d+\\.\\d$`).test(l)), `a line for ${name.trim()} in:\n${d.stderr}`);
    }
    assert.match(lines[lines.length - 2], /^ {2}dump \(start-up not included\) +\d+\.\d {3}remote syscalls: [1-9]\d* in [1-9]\d* stops$/);
    assert.match(lines[lines.length - 1], new RegExp(`^dumped pid ${fx.pid} `));
    await fx.reap();
    await waitGone([fx.pid]);
    const dir2 = path.join(root, 'timings-json');
    const r = runStasis(['restore', '-D', dir, '-d', '--json', '--timings']);
    assert.equal(r.status, 0, describeCli(r));
    fx.restored();
    assert.equal(r.stderr, '', 'nothing on stderr with --json');
    const rr = JSON.parse(r.stdout);
    checkBreakdown(rr.timings, rr.ms, ['start-up', 'modules', 'verify', 'load', 'validate', 'stub'], 'finish');
    for (const step of ['address-space', 'pages', 'mm', 'sigactions', 'files', 'creds']) assert.ok(step in rr.timings, `restore step ${step}`);
    assert.ok(rr.timings['start-up'] > 0 && rr.remoteCalls > 0);
    await fx.assertCounting();
    const j = runStasis(['dump', '-t', String(fx.pid), '-D', dir2, '--json', '-R']);
    assert.equal(j.status, 0, describeCli(j));
    const dr = JSON.parse(j.stdout);
    // -R: the tree goes on before the commit (the hashing's end, the moves), not after it.
    checkBreakdown(dr.timings, dr.ms, ['start-up', 'modules', 'check', 'open', 'freeze', 'inspect'], 'commit');
    const top = topLevel(dr.timings).map(([k]) => k);
    assert.equal(top.indexOf('release'), top.length - 2, `release right before commit: ${top.join(' ')}`);
    assert.ok(dr.frozenMs <= dr.ms - dr.timings.commit + 0.01, `frozen ${dr.frozenMs} ms ends before the commit`);
    const parasite = partsOf(dr.timings, 'parasite');
    assert.deepEqual(parasite.slice(0, 2).map(([k]) => k), ['parasite.prepare', 'parasite.scratch']);
    // The units' declared calls run as one batch; memory has a hook of its own.
    for (const part of ['batch', 'memory']) assert.ok(`parasite.${part}` in dr.timings, `parasite part ${part}`);
    assert.ok(sum(parasite) <= dr.timings.parasite + 0.01, `parasite parts ${sum(parasite)} ms within the parasite's ${dr.timings.parasite} ms`);
    assert.ok(dr.remoteCalls > 0);
    await fx.assertCounting();
  } finally {
    await fx.kill();
    reapZombies();
  }
});

test('the build\'s bundle holds every module of dist/src, is current, and its code cache is accepted', () => {
  const vm = require('node:vm') as typeof import('node:vm');
  const Module = require('node:module');
  const dist = path.join(__dirname, '..');
  const file = path.join(dist, 'stasis.bundle.js');
  const script = new vm.Script(fs.readFileSync(file, 'utf8'), { filename: file, cachedData: fs.readFileSync(path.join(dist, 'stasis.bundle.cache')) });
  assert.equal(script.cachedDataRejected, false);
  const bundle = script.runInThisContext()(Module, path, path.join(dist, 'src')) as { names: string[]; current(f: typeof fs, mtime: number): boolean };
  // Worker threads' entries (NAME-worker.js) run from their own files.
  const files = (fs.readdirSync(path.join(dist, 'src'), { recursive: true }) as string[]).filter((f) => f.endsWith('.js') && !f.endsWith('-worker.js'));
  assert.ok(files.length > 100 && fs.existsSync(path.join(dist, 'src', 'images', 'write-behind-worker.js')));
  assert.deepEqual([...bundle.names].sort(), files.sort());
  assert.equal(bundle.current(fs, fs.statSync(file).mtimeMs), true);
  // Files written after the bundle (a tsc run without the bundle step): stale.
  assert.equal(bundle.current(fs, 0), false);
  // ASCII only (bin/stasis.js reads it as latin1), marked so; comments left out, strings kept:
  // the help (with its em dashes) reads the same from the bundle as from the modules.
  const raw = fs.readFileSync(file);
  assert.ok(raw.every((b) => b < 0x80), 'ASCII only');
  assert.ok(raw.toString('latin1').startsWith('// stasis bundle: ascii\n'));
  const fromBundle = runStasis(['--help']), fromModules = runStasis(['--help'], { STASIS_NO_BUNDLE: '1' });
  assert.equal(fromBundle.status, 0);
  assert.match(fromBundle.stdout, /\u2014/);
  assert.equal(fromBundle.stdout, fromModules.stdout);
});
