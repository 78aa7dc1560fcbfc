// An inotify watch on a file deleted since (still open, so the watch lives):
// its path names nothing now, and a ghost made again would send the watch the
// events of its own removal. Refused at dump; the process keeps its watch.
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Fixture, initHarness, runStasis, tmpDir, waitFor, tracerPid } from './harness';
import { assertOneLineError } from './net-helpers';

let root: string;
before(() => { initHarness(); root = tmpDir('inotifydel'); });
after(() => fs.rmSync(root, { recursive: true, force: true }));

test('refused: an inotify watch on a deleted file; the watch still works after', async () => {
  const fx = await Fixture.start('inotifydel', { extraFds: true });
  try {
    const dir = path.join(root, 'images');
    assertOneLineError(runStasis(['dump', '-t', String(fx.pid), '-D', dir]), /^stasis: fd \d+ of pid \d+: inotify watch 1 is on a deleted file \(.*\/watched \(deleted\)\); not supported$/);
    assert.ok(!fs.existsSync(path.join(dir, 'inventory.img')), 'no checkpoint');
    await waitFor('untraced', () => tracerPid(fx.pid) === 0, 2000, 5);
    const { log } = await fx.terminate();
    assert.match(log, /^PASS$/m, log);
  } finally {
    await fx.kill();
  }
});
