// Shared file mappings keep the access their file was opened with
// (VM_MAYWRITE, smaps "mw"): one made read-only from a read-write file can
// be made writable again after restore, one from a read-only file cannot.
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Fixture, initHarness, runStasis, describeCli, tmpDir, restoreDetached, waitGone } from './harness';

let root: string;
before(() => { initHarness(); root = tmpDir('mapprot'); });
after(() => fs.rmSync(root, { recursive: true, force: true }));

test('read-only shared mappings of a read-write and of a read-only file: mprotect(PROT_WRITE) works and fails as before', async () => {
  const fx = await Fixture.start('mapprot');
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
