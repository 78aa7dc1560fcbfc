// Processes sharing one fd table (clone(CLONE_FILES) without CLONE_THREAD):
// a child and a grandchild sharing the root's table are dumped with one
// files_id and one fdinfo image, and restored sharing it again (an fd opened
// by one is seen by the others; a forked sibling keeps a table of its own).
// Sharing a table the parent does not share is refused at dump.
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Fixture, initHarness, tmpDir, runStasis, waitFor, tracerPid, procState } from './harness';
import { readImage } from '../src/images/image';
import { dumpKillRestore, assertOneLineError } from './net-helpers';

let root: string;
before(() => { initHarness(); root = tmpDir('fdtshared'); });
after(() => fs.rmSync(root, { recursive: true, force: true }));

test('a child and a grandchild sharing the root\'s fd table (CLONE_FILES), a forked sibling with its own: shared again after restore', async () => {
  const fx = await Fixture.start('fdtshared', { extraFds: true });
  try {
    const log = fs.readFileSync(fx.logPath, 'utf8');
    const procs = new Map([...log.matchAll(/^PROC (\w) (\d+)$/gm)].map((m) => [m[1], Number(m[2])]));
    const [a, g, b] = ['A', 'G', 'B'].map((n) => procs.get(n)!);
    const dir = path.join(root, 'images');
    await dumpKillRestore(fx, dir, { tree: [a, g, b] });
    const ids = (pid: number) => readImage(dir, `ids-${pid}.img`, 'IDS', 'task_kobj_ids_entry')[0].files_id;
    assert.equal(ids(a), ids(fx.pid), 'A: the root\'s files_id');
    assert.equal(ids(g), ids(fx.pid), 'G: the root\'s files_id');
    assert.notEqual(ids(b), ids(fx.pid), 'B: a table of its own');
    // One fdinfo image per table: the root's and B's.
    assert.deepEqual(fs.readdirSync(dir).filter((f) => f.startsWith('fdinfo-')).sort(), [`fdinfo-${ids(fx.pid)}.img`, `fdinfo-${ids(b)}.img`].sort());
    for (const p of [a, g, b]) assert.notEqual(procState(p), 'Z');
    const { log: out } = await fx.terminate();
    assert.match(out, /^PASS$/m, out);
  } finally {
    await fx.kill();
  }
});

test('refused: two children sharing an fd table their parent left (unshare); the tree runs on', async () => {
  const fx = await Fixture.start('fdtshared', { args: ['sibling'], extraFds: true });
  try {
    const log = fs.readFileSync(fx.logPath, 'utf8');
    const procs = new Map([...log.matchAll(/^PROC (\w) (\d+)$/gm)].map((m) => [m[1], Number(m[2])]));
    const dir = path.join(root, 'refused');
    const r = runStasis(['dump', '-t', String(fx.pid), '-D', dir]);
    assertOneLineError(r, new RegExp(`^stasis: processes ${procs.get('A')} and ${procs.get('C')} share their fd table, which ${procs.get('C')}'s parent does not share; not supported yet$`));
    assert.ok(!fs.existsSync(path.join(dir, 'inventory.img')), 'no checkpoint');
    await waitFor('untraced', () => tracerPid(fx.pid) === 0 && tracerPid(procs.get('A')!) === 0, 2000, 5);
    const { log: out } = await fx.terminate();
    assert.match(out, /^PASS$/m, out);
  } finally {
    await fx.kill();
  }
});
