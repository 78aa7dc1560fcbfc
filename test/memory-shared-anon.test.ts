// Shared anonymous memory mapped by a parent and its child (and by two VMAs
// of the parent, one at an offset into the object) is one object again after
// restore: a futex in it wakes the other process, writes show across.
import { test, before, after } from 'node:test';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { initHarness, tmpDir } from './harness';
import { fixtureRoundTrip } from './net-helpers';

let root: string;
before(() => { initHarness(); root = tmpDir('sharedanon'); });
after(() => fs.rmSync(root, { recursive: true, force: true }));

test('MAP_SHARED|MAP_ANONYMOUS across fork: still shared after restore', async () => {
  await fixtureRoundTrip('sharedanon', path.join(root, 'images'));
});
