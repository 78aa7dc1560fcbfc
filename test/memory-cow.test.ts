// Private memory a parent and its child share copy-on-write (written before
// fork, untouched since) is one physical page in both again after restore,
// as it was; pages either side wrote after fork, or the child dropped, or
// remapped, hold what each side had.
import { test, before, after } from 'node:test';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { initHarness, tmpDir } from './harness';
import { fixtureRoundTrip } from './net-helpers';

let root: string;
before(() => { initHarness(); root = tmpDir('cow'); });
after(() => fs.rmSync(root, { recursive: true, force: true }));

test('private anonymous and private file pages shared copy-on-write across fork: still shared after restore', async () => {
  await fixtureRoundTrip('cow', path.join(root, 'images'), { args: [root] });
});
