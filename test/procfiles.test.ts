// Files of /proc held open that name processes of the tree (a child's
// /proc/PID/stat, /proc/self/maps, namespace fds of /proc/self/ns/*): the
// same pids come back, so the same paths name the restored processes; they
// are re-opened once the tree exists, at the offset they had. What cannot be
// re-opened that way is refused at dump: a file of a thread other than a
// leader, a namespace no process of the tree lives in.
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Fixture, initHarness, runStasis, tmpDir, waitFor, tracerPid, procState } from './harness';
import { dumpKillRestore, assertOneLineError } from './net-helpers';
import { readImage } from '../src/images/image';

let root: string;
before(() => { initHarness(); root = tmpDir('procfiles'); });
after(() => fs.rmSync(root, { recursive: true, force: true }));

test('a child\'s /proc/PID/stat, /proc/self/maps and namespace fds: re-opened on the restored processes', async () => {
  const dir = path.join(root, 'images');
  const fx = await Fixture.start('procfiles', { pthread: true, extraFds: true });
  try {
    const child = Number(fs.readFileSync(`/proc/${fx.pid}/task/${fx.pid}/children`, 'utf8').trim());
    await dumpKillRestore(fx, dir, { tree: [child] });
    const { log } = await fx.terminate();
    assert.match(log, /^PASS$/m, log);
  } finally {
    await fx.kill();
  }
  const names = readImage(dir, 'files.img', 'FILES', 'file_entry').flatMap((f) => f.reg ? [f.reg.name] : []);
  assert.ok(names.includes('/proc/self/ns/net') && names.includes('/proc/self/ns/uts'), `namespace files by their owner's /proc/self: ${names.join(' ')}`);
  assert.ok(names.some((n) => /^\/proc\/\d+\/stat$/.test(n)) && names.some((n) => /^\/proc\/\d+\/maps$/.test(n)), names.join(' '));
});

for (const [mode, message] of [
  ['thread', /^stasis: fd \d+ of pid (\d+): \/proc\/\1\/task\/(\d+)\/stat is a file of thread \2, which is made after files are opened; not supported$/],
  ['foreign-ns', /^stasis: fd \d+ of pid \d+: namespace file uts:\[\d+\] is of a namespace no process of the tree lives in; not supported$/],
] as const) {
  test(`refused: ${mode === 'thread' ? 'a /proc file of a second thread' : 'an fd of a namespace nobody in the tree lives in'}; the process runs on`, async () => {
    const fx = await Fixture.start('procfiles', { args: [mode], pthread: true, extraFds: true });
    try {
      const dir = path.join(root, mode);
      assertOneLineError(runStasis(['dump', '-t', String(fx.pid), '-D', dir]), message);
      assert.ok(!fs.existsSync(path.join(dir, 'inventory.img')), 'no checkpoint');
      await waitFor('untraced', () => tracerPid(fx.pid) === 0, 2000, 5);
      assert.ok(!/^[tT]$/.test(procState(fx.pid)), 'running');
      const { log } = await fx.terminate();
      assert.match(log, /^PASS$/m, log);
    } finally {
      await fx.kill();
    }
  });
}
