// seccomp: stacked filters per thread (TSYNC, LOG, one thread's own) and
// no_new_privs survive dump → restore and still act; the filters never see
// the calls stasis makes in the task (one kills it on getitimer and munmap).
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Fixture, initHarness, runStasis, describeCli, tmpDir, restoreDetached, waitGone, crit } from './harness';

let root: string;
before(() => { initHarness(); root = tmpDir('seccomp'); });
after(() => fs.rmSync(root, { recursive: true, force: true }));

test('two stacked filters and no_new_privs in two threads, one more in one thread: still acting after restore', async () => {
  const fx = await Fixture.start('seccomp', { pthread: true });
  try {
    const dir = path.join(root, 'images');
    const status = (p: number, key: string) => fs.readdirSync(`/proc/${p}/task`).map((t) => new RegExp(`^${key}:\\s*(.*)$`, 'm').exec(fs.readFileSync(`/proc/${p}/task/${t}/status`, 'utf8'))![1]).sort();
    const before = { filters: status(fx.pid, 'Seccomp_filters') };
    assert.deepEqual(before.filters, ['2', '3']);
    // -R first: the dump's own calls (getitimer...) must not kill it.
    const r1 = runStasis(['dump', '-t', String(fx.pid), '-D', path.join(root, 'leave'), '-R']);
    assert.equal(r1.status, 0, describeCli(r1));
    assert.ok(fx.alive, 'alive after a dump with -R (its filters did not see our calls)');
    const d = runStasis(['dump', '-t', String(fx.pid), '-D', dir]);
    assert.equal(d.status, 0, describeCli(d));
    await fx.reap();
    await waitGone([fx.pid]);
    const img = JSON.parse(crit(['decode', '-i', path.join(dir, 'seccomp.img')])).entries[0].seccomp_filters;
    assert.equal(img.length, 5, 'each thread\'s stack (2 + 3): the stacks differ, so no TSYNC');
    restoreDetached(dir);
    fx.restored();
    assert.deepEqual(status(fx.pid, 'Seccomp_filters'), before.filters);
    const { log } = await fx.terminate();
    assert.match(log, /^PASS$/m, log);
  } finally {
    await fx.kill();
  }
});
