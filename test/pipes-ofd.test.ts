// Pipes: each open file description of a pipe end (pipe2's, a dup of it, a
// new one opened through /proc/PID/fd) restored as its own, with its flags.
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Fixture, initHarness, runStasis, describeCli, tmpDir, restoreDetached, waitGone } from './harness';

let root: string;
before(() => { initHarness(); root = tmpDir('pipeofd'); });
after(() => fs.rmSync(root, { recursive: true, force: true }));

test('two open file descriptions of each end of a pipe keep their own O_NONBLOCK and the queued bytes', async () => {
  const fx = await Fixture.start('pipeofd', { extraFds: true });
  try {
    const dir = path.join(root, 'images');
    const d = runStasis(['dump', '-t', String(fx.pid), '-D', dir]);
    assert.equal(d.status, 0, describeCli(d));
    await fx.reap();
    await waitGone([fx.pid]);
    restoreDetached(dir);
    fx.restored();
    const { log } = await fx.terminate();
    assert.match(log, /^PASS$/m, log);
  } finally {
    await fx.kill();
  }
});
