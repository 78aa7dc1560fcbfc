// Socket options a program sets: a classic BPF filter, the bound device,
// the mark, buffer sizes it locked (SO_BUF_LOCK), TCP keepalive timing.
// A filter on a socket with queued data is refused (the data would go back
// through it).
import { test, before, after } from 'node:test';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { initHarness, tmpDir } from './harness';
import { fixtureRoundTrip } from './net-helpers';

let root: string;
before(() => { initHarness(); root = tmpDir('sockopts'); });
after(() => fs.rmSync(root, { recursive: true, force: true }));

test('filter, bound device, mark, locked buffer sizes, keepalive timing: as set after restore', async () => {
  await fixtureRoundTrip('sockopts', path.join(root, 'images'), { extraFds: true });
});
