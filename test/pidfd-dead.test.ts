// pidfds of processes that have exited and been reaped: saved as criu does
// (nspid -1 and the inode telling which dead process), restored as pidfds of
// a dead process of stasis's own — readable at once, nobody's child, no
// process to signal —, those of one process (in one task or two) sharing one
// inode, those of two processes not.
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Fixture, initHarness, tmpDir } from './harness';
import { readImage } from '../src/images/image';
import { dumpKillRestore } from './net-helpers';

let root: string;
before(() => { initHarness(); root = tmpDir('pidfddead'); });
after(() => fs.rmSync(root, { recursive: true, force: true }));

test('pidfds of two dead processes (two on one, in the process; one on the other in the process and its child): dead pidfds again, one inode per process', async () => {
  const fx = await Fixture.start('pidfddead', { extraFds: true });
  try {
    const kids = fs.readFileSync(`/proc/${fx.pid}/task/${fx.pid}/children`, 'utf8').trim().split(/\s+/).map(Number);
    assert.equal(kids.length, 1, 'one live child');
    const dir = path.join(root, 'images');
    await dumpKillRestore(fx, dir, { tree: kids });
    const pidfds = readImage(dir, 'files.img', 'FILES', 'file_entry').flatMap((f) => (f.pidfd ? [f.pidfd] : []));
    assert.equal(pidfds.length, 4, 'four open pidfds (d1, d2, g1; g2 in the child)');
    assert.deepEqual(pidfds.map((p) => p.nspid), [-1, -1, -1, -1]);
    assert.equal(new Set(pidfds.map((p) => p.ino)).size, 2, 'two dead processes');
    const { log } = await fx.terminate();
    assert.match(log, /^PASS$/m, log);
  } finally {
    await fx.kill();
  }
});
