// Processes stopped by job control with more stop signals queued (a second
// SIGSTOP sent to the process or to the thread, a SIGTSTP behind a SIGTSTP):
// the dump takes the queued ones (they do nothing to a stopped process) and
// the restored processes are stopped by their signal, then continue normally.
import { test, before, after } from 'node:test';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { initHarness, tmpDir } from './harness';
import { fixtureRoundTrip } from './net-helpers';

let root: string;
before(() => { initHarness(); root = tmpDir('stoppending'); });
after(() => fs.rmSync(root, { recursive: true, force: true }));

test('stopped children with SIGSTOP/SIGTSTP still queued: dumped, restored stopped, continue', async () => {
  await fixtureRoundTrip('stoppending', path.join(root, 'images'), { extraFds: true });
});
