// Socket options a program sets: a classic BPF filter, the bound device,
// the mark, buffer sizes it locked (SO_BUF_LOCK), TCP keepalive timing.
// A filter on a socket with queued data is refused (the data would go back
// through it).
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Fixture, initHarness, runStasis, describeCli, tmpDir, restoreDetached, waitGone } from './harness';

let root: string;
before(() => { initHarness(); root = tmpDir('sockopts'); });
after(() => fs.rmSync(root, { recursive: true, force: true }));

test('filter, bound device, mark, locked buffer sizes, keepalive timing: as set after restore', async () => {
  const fx = await Fixture.start('sockopts', { extraFds: true });
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
