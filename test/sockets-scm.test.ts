// Files in flight in a unix socket's queue (SCM_RIGHTS): refused at dump in
// one line, and the process keeps its message and the file in it.
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Fixture, initHarness, runStasis, describeCli, tmpDir, waitFor, tracerPid, procState } from './harness';

let root: string;
before(() => { initHarness(); root = tmpDir('scm'); });
after(() => fs.rmSync(root, { recursive: true, force: true }));

for (const kind of ['stream', 'dgram']) {
  test(`a pipe in flight on a ${kind} unix socketpair: refused at dump, the message and its fd still there`, async () => {
    const fx = await Fixture.start('scm', { extraFds: true, args: [kind] });
    try {
      const r = runStasis(['dump', '-t', String(fx.pid), '-D', path.join(root, kind)]);
      assert.equal(r.status, 1, describeCli(r));
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
      assert.match(r.stderr, new RegExp(`fd 4 of pid ${fx.pid}: unix socket \\d+: its queue holds 1 file descriptor\\(s\\) in flight \\(SCM_RIGHTS\\); not supported`));
      await waitFor('untraced', () => tracerPid(fx.pid) === 0, 2000, 5);
      assert.ok(fx.alive && !/^[tTZ]$/.test(procState(fx.pid)), 'still running');
      const { log } = await fx.terminate();
      assert.match(log, /^PASS$/m, log);
    } finally {
      await fx.kill();
    }
  });
}
