// Owners of fds: F_SETOWN_EX (a process, a process group), F_SETSIG, the
// credentials the owner was set with, and O_ASYNC, carried (fown_entry);
// an owner outside the dumped tree is refused at dump.
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Fixture, initHarness, runStasis, describeCli, tmpDir, waitFor, tracerPid, procState } from './harness';
import { fixtureRoundTrip } from './net-helpers';

let root: string;
before(() => { initHarness(); root = tmpDir('fown'); });
after(() => fs.rmSync(root, { recursive: true, force: true }));

test('a pipe owned by its process (signal SIGRTMIN+1, set under euid 1234) and by its group: owners, signal, uids, O_ASYNC, and the signal comes', async () => {
  await fixtureRoundTrip('fown', path.join(root, 'images'), { extraFds: true });
});

test('an fd owned by a process outside the tree: refused at dump in one line, the process runs on', async () => {
  const fx = await Fixture.start('fown', { extraFds: true, args: ['outside'] });
  try {
    const r = runStasis(['dump', '-t', String(fx.pid), '-D', path.join(root, 'outside')]);
    assert.equal(r.status, 1, describeCli(r));
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.match(r.stderr, new RegExp(`fd 3 of pid ${fx.pid}: its owner \\(F_SETOWN\\) is process 1, outside the dumped tree; not supported`));
    await waitFor('untraced', () => tracerPid(fx.pid) === 0, 2000, 5);
    assert.ok(fx.alive && !/^[tTZ]$/.test(procState(fx.pid)), 'still running');
    const { log } = await fx.terminate();
    assert.match(log, /^FAIL: fd 3: owner 1\/\d+, expected/m, 'its own check still sees the outside owner');
  } finally {
    await fx.kill();
  }
});
