// Zombies in a process group whose leader is gone (no live process of the
// tree in it, its id free): restore makes the group again with a helper that
// takes the leader's id, the zombies join it, and the helper ends and is
// reaped by its parent: the parent finds its zombies in that group, exiting
// as they did, and no other child.
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Fixture, initHarness, tmpDir, procState } from './harness';
import { readImage } from '../src/images/image';
import { dumpKillRestore } from './net-helpers';

let root: string;
before(() => { initHarness(); root = tmpDir('zombiegroup'); });
after(() => fs.rmSync(root, { recursive: true, force: true }));

test('two zombies in a group whose leader has exited and been reaped: restored in that group, the helper gone', async () => {
  const fx = await Fixture.start('zombiegroup', { extraFds: false });
  try {
    const leader = Number(fx.manifest.values.get('LEADER')![0]);
    const zombies = fx.manifest.values.get('ZOMBIE')!.map(Number);
    for (const z of zombies) assert.equal(procState(z), 'Z');
    const dir = path.join(root, 'images');
    await dumpKillRestore(fx, dir, { tree: zombies });
    const tree = readImage(dir, 'pstree.img', 'PSTREE', 'pstree_entry');
    assert.deepEqual(tree.map((e) => [e.pid, e.pgid]), [[fx.pid, fx.pid], [zombies[0], leader], [zombies[1], leader]]);
    for (const z of zombies) assert.equal(procState(z), 'Z');
    assert.ok(!fs.existsSync(`/proc/${leader}`), 'the helper with the leader\'s pid is gone');
    const { log } = await fx.terminate();
    assert.match(log, /^PASS$/m, log);
  } finally {
    await fx.kill();
  }
});
