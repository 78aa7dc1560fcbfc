// A process that unmapped its vdso and vvar comes back without them (the
// stub's own are unmapped rather than moved where the dump had none).
import { test, before, after } from 'node:test';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { initHarness, tmpDir } from './harness';
import { fixtureRoundTrip } from './net-helpers';

let root: string;
before(() => { initHarness(); root = tmpDir('novdso'); });
after(() => fs.rmSync(root, { recursive: true, force: true }));

test('no [vdso] nor [vvar] at dump: none after restore', async () => {
  await fixtureRoundTrip('novdso', path.join(root, 'images'));
});
