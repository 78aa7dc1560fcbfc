// Pipes: each open file description of a pipe end (pipe2's, a dup of it, a
// new one opened through /proc/PID/fd) restored as its own, with its flags.
import { test, before, after } from 'node:test';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { initHarness, tmpDir } from './harness';
import { fixtureRoundTrip } from './net-helpers';

let root: string;
before(() => { initHarness(); root = tmpDir('pipeofd'); });
after(() => fs.rmSync(root, { recursive: true, force: true }));

test('two open file descriptions of each end of a pipe keep their own O_NONBLOCK and the queued bytes', async () => {
  await fixtureRoundTrip('pipeofd', path.join(root, 'images'), { extraFds: true });
});
