// Processes stopped by job control come back stopped by the same signal
// (task_core_entry.stop_signo): their parent's waitid(WSTOPPED) reports
// SIGTSTP, SIGTTIN or SIGSTOP as before.
import { test, before, after } from 'node:test';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { initHarness, tmpDir } from './harness';
import { fixtureRoundTrip } from './net-helpers';

let root: string;
before(() => { initHarness(); root = tmpDir('stopsig'); });
after(() => fs.rmSync(root, { recursive: true, force: true }));

test('children stopped by SIGTSTP, SIGTTIN and SIGSTOP: the same stop signal after restore', async () => {
  await fixtureRoundTrip('stopsig', path.join(root, 'images'));
});
