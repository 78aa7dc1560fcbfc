// memfd inodes: owner and mode carried (memfd_inode_entry.mode), and no
// writer that was not there (a memfd still execs after restore).
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Fixture, initHarness, runStasis, describeCli, tmpDir, restoreDetached, waitGone } from './harness';

let root: string;
before(() => { initHarness(); root = tmpDir('memfdx'); });
after(() => fs.rmSync(root, { recursive: true, force: true }));

test('a memfd with mode 0642 and owner 1234:1235, and a memfd executed after restore (fd, read-only reopen, shared and private mappings)', async () => {
  const fx = await Fixture.start('memfdexec', { extraFds: true });
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
