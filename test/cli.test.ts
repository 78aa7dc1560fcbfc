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
