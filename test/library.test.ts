// The library from a program's point of view: dump and restore are async,
// the caller's event loop keeps running meanwhile, and its process is left
// as it was (not a child subreaper, no tracees); errors carry stable codes.
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { Fixture, initHarness, tmpDir, reapZombies, waitGone, ROOT } from './harness';

let root: string;
before(() => { initHarness(); root = tmpDir('lib'); });
after(() => fs.rmSync(root, { recursive: true, force: true }));

/** A program using the library: it reports what happened to its own process and event loop. */
const PROGRAM = `
const { dump, restore, readCheckpoint, StasisError } = require(process.argv[2]);
const { sys, addressOf, abi } = require(process.argv[3]);
const subreaper = () => { const b = Buffer.alloc(4); sys('prctl', abi.PR.GET_CHILD_SUBREAPER, addressOf(b)); return b.readInt32LE(0); };
(async () => {
  const [pid, dir] = [Number(process.argv[4]), process.argv[5]];
  let ticks = 0;
  const timer = setInterval(() => ticks++, 1);
  const before = subreaper();
  const d = await dump({ pid, imagesDir: dir, leaveRunning: true });
  const ticksDuringDump = ticks;
  const shown = await readCheckpoint(dir);
  let err;
  try { await dump({ pid: 999999999, imagesDir: dir + '-x' }); } catch (e) { err = { isStasis: e instanceof StasisError, code: e.code }; }
  clearInterval(timer);
  console.log(JSON.stringify({ before, after: subreaper(), ticksDuringDump, d, comm: shown.processes[0].comm, err }));
})().catch((e) => { console.error(e); process.exit(1); });
`;

test('dump/readCheckpoint from a program: async, the caller unchanged, typed errors; restore brings it back', async () => {
  const fx = await Fixture.start('counter');
  try {
    const dir = path.join(root, 'images');
    const script = path.join(root, 'prog.js');
    fs.writeFileSync(script, PROGRAM);
    const r = spawnSync(process.execPath, [script, path.join(ROOT, 'dist', 'src', 'index.js'), path.join(ROOT, 'dist', 'src', 'sys', 'index.js'), String(fx.pid), dir], { encoding: 'utf8', timeout: 60000 });
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    assert.equal(out.before, 0);
    assert.equal(out.after, 0, 'the caller is not left a child subreaper');
    assert.ok(out.ticksDuringDump > 0, 'the caller\'s event loop ran during the dump');
    assert.equal(out.d.pid, fx.pid);
    assert.equal(out.comm, 'counter');
    assert.deepEqual(out.err, { isStasis: true, code: 'STASIS_NO_SUCH_PROCESS' });
    await fx.assertCounting(); // -R: still running

    // Restore through the library too (from this process: the restored tree is re-parented to us).
    // It went on logging after the dump (-R): its log grew, hence skipFileCheck.
    process.kill(fx.pid, 'SIGKILL');
    await fx.reap();
    await waitGone([fx.pid]);
    const { restore } = await import('../src/index');
    const res = await restore({ imagesDir: dir, detached: true, skipFileCheck: true });
    assert.equal(res.pid, fx.pid);
    fx.restored();
    await fx.assertCounting();
  } finally {
    await fx.kill();
    reapZombies();
  }
});
