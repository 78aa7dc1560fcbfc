// Files in flight nested (SCM_RIGHTS): a unix socket in flight whose own
// queue holds a file in flight is refused at dump in one line, and the
// process keeps its messages and the files in them.
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Fixture, initHarness, runStasis, describeCli, tmpDir, waitFor, tracerPid, procState } from './harness';

let root: string;
before(() => { initHarness(); root = tmpDir('scm'); });
after(() => fs.rmSync(root, { recursive: true, force: true }));

for (const kind of ['stream', 'dgram']) {
  test(`a socket holding a pipe in flight, itself in flight on a ${kind} unix socketpair: refused at dump, the messages and their fds still there`, async () => {
    const fx = await Fixture.start('scm', { extraFds: true, args: [kind] });
    try {
      const r = runStasis(['dump', '-t', String(fx.pid), '-D', path.join(root, kind)]);
      assert.equal(r.status, 1, describeCli(r));
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
      assert.match(r.stderr, new RegExp(`^stasis: fd 4 of pid ${fx.pid}: unix socket \\d+: a file in flight in its queue \\(SCM_RIGHTS\\): a unix socket in flight whose own queue holds 1 file\\(s\\) in flight \\(SCM_RIGHTS\\) too; not supported$`, 'm'));
      await waitFor('untraced', () => tracerPid(fx.pid) === 0, 2000, 5);
      assert.ok(fx.alive && !/^[tTZ]$/.test(procState(fx.pid)), 'still running');
      const { log } = await fx.terminate();
      assert.match(log, /^PASS$/m, log);
    } finally {
      await fx.kill();
    }
  });
}
