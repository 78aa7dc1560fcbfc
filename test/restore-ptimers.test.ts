// POSIX timers come back with the same ids (a gap left by a deleted timer
// included), clocks, notification and value, and the periodic one keeps firing.
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Fixture, initHarness, tmpDir } from './harness';
import { dumpKillRestore } from './net-helpers';

let root: string;
before(() => { initHarness(); root = tmpDir('ptimers'); });
after(() => fs.rmSync(root, { recursive: true, force: true }));

/** /proc/PID/timers without the pid in "notify: signal/pid.N" (the same pid anyway). */
function timers(pid: number): string {
  return fs.readFileSync(`/proc/${pid}/timers`, 'utf8');
}

test('POSIX timers: same ids, clocks, signal and value; the periodic one still fires', async () => {
  const fx = await Fixture.start('ptimers');
  try {
    assert.match(fx.log(), /^IDS 0 1 2$/m, 'timer ids as created (b deleted: a gap at 1)');
    await fx.assertCounting();
    const before = timers(fx.pid);
    assert.match(before, /ID: 0\nsignal: 10\/0000000000001092\nnotify: signal\/pid\.\d+\nClockID: 1\n/);
    await dumpKillRestore(fx, path.join(root, 'images'));
    assert.equal(timers(fx.pid), before, '/proc/PID/timers identical');
    const c0 = fx.counter();
    await fx.waitCounter(c0 + 20n, 3000);
    const { log, status } = await fx.terminate();
    assert.match(log, /^PASS$/m, log);
    assert.deepEqual(status, { kind: 'exited', pid: fx.pid, code: 0 });
  } finally {
    await fx.kill();
  }
});
