// Zombies in the tree (children that exited and that their parent has not
// waited for): dumped as criu does (TASK_DEAD with the wait status) and
// re-created on restore, so the parent's wait finds each as it was — exited
// with its code or killed by its signal, in its group and session.
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Fixture, initHarness, runStasis, describeCli, tmpDir, restoreDetached, procState, waitGone, waitFor, tracerPid } from './harness';
import { readImage } from '../src/images/image';
import { TASK_STATE } from '../src/images/criu';

let root: string;
before(() => { initHarness(); root = tmpDir('zombies'); });
after(() => fs.rmSync(root, { recursive: true, force: true }));

test('a parent with six zombies (exit codes, signals incl. SIGKILL, own group, own session): restored, its waits find each as it was', async () => {
  const fx = await Fixture.start('zombie');
  try {
    const first = Number(fx.manifest.values.get('CHILD')![0]);
    assert.equal(procState(first), 'Z');
    const dir = path.join(root, 'images');
    const d = runStasis(['dump', '-t', String(fx.pid), '-D', dir]);
    assert.equal(d.status, 0, describeCli(d));
    await fx.reap();
    const tree = readImage(dir, 'pstree.img', 'PSTREE', 'pstree_entry');
    assert.equal(tree.length, 7, 'the parent and six zombies');
    const states = tree.slice(1).map((e) => readImage(dir, `core-${e.pid}.img`, 'CORE', 'core_entry')[0].tc!);
    assert.deepEqual(states.map((tc) => tc.task_state), Array(6).fill(TASK_STATE.DEAD));
    assert.deepEqual(states.map((tc) => tc.exit_code), [7 << 8, 10 /* SIGUSR1 */, 9 /* SIGKILL */, 11 /* SIGSEGV */, 3 << 8, 0]);
    // Its zombies came to us (the subreaper) when it was killed: ours to reap, freeing their pids.
    await waitGone(tree.map((e) => e.pid), 5000);
    restoreDetached(dir);
    fx.restored();
    assert.equal(procState(first), 'Z', 'a zombie again');
    const { status, log } = await fx.terminate();
    assert.match(log, /^PASS$/m, log);
    assert.equal(status.kind, 'exited');
  } finally {
    await fx.kill();
  }
});

// What cannot be made again is refused, the tree left running: a zombie whose
// status says it dumped core, and one that leads the group of a live sibling.
for (const [mode, message] of [
  ['core', /^stasis: pid (\d+) \(zombie\), a zombie, dumped core as it ended \(the core-dumped bit of its wait status, which stasis does not make again\); not supported$/],
  ['leader', /^stasis: pid (\d+) \(zombie\) is a zombie that still leads the process group of pid \d+; not supported$/],
  ['session', /^stasis: pid (\d+) \(zombie\), a zombie, is in session \d+, neither its own nor its parent's; not supported$/],
  ['group', /^stasis: pid (\d+) \(zombie\), a zombie, is in process group \d+, which has no live member in the tree, and whose id is pid \d+ of the tree; not supported$/],
] as const) {
  const what = { core: 'that dumped core', leader: 'leading a live sibling\'s group', session: 'in a session its parent left', group: 'in a group its parent left' }[mode];
  test(`refused: a zombie ${what}; the tree runs on`, async () => {
    const fx = await Fixture.start('zombie', { args: [mode] });
    try {
      const child = Number(fx.manifest.values.get('CHILD')![0]);
      assert.equal(procState(child), 'Z');
      const dir = path.join(root, `refused-${mode}`);
      const r = runStasis(['dump', '-t', String(fx.pid), '-D', dir]);
      assert.equal(r.status, 1, describeCli(r));
      const m = r.stderr.trim().match(message);
      assert.ok(m, r.stderr);
      assert.equal(Number(m[1]), child);
      assert.ok(!fs.existsSync(path.join(dir, 'inventory.img')), 'no checkpoint');
      assert.equal(procState(child), 'Z', 'still a zombie');
      await waitFor('untraced', () => tracerPid(fx.pid) === 0, 2000, 5);
      const { log } = await fx.terminate();
      assert.match(log, /^PASS$/m, log);
    } finally {
      await fx.kill();
    }
  });
}
