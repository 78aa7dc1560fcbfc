// pidfds of processes of the tree (a child, a grandchild, the process
// itself, non-blocking) are pidfds of the same processes after restore: they
// signal them, poll their exit and wait for them. A pidfd of a process that
// has exited and been reaped: test/pidfd-dead.test.ts.
import { test, before, after } from 'node:test';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { initHarness, tmpDir } from './harness';
import { fixtureRoundTrip } from './net-helpers';

let root: string;
before(() => { initHarness(); root = tmpDir('pidfds'); });
after(() => fs.rmSync(root, { recursive: true, force: true }));

test('pidfds of a child, a grandchild and the process itself: the same processes after restore', async () => {
  await fixtureRoundTrip('pidfds', path.join(root, 'images'), { extraFds: true });
});
