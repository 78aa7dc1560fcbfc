// A deleted file open more than once (open file descriptions of their own,
// by two hard links, or in a parent and its child) is one file again after
// restore: one ghost image per inode, every opener remapped to it.
import { test, before, after } from 'node:test';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { initHarness, tmpDir } from './harness';
import { fixtureRoundTrip } from './net-helpers';

let root: string;
before(() => { initHarness(); root = tmpDir('ghostshare'); });
after(() => fs.rmSync(root, { recursive: true, force: true }));

test('a deleted file opened twice, and one open in parent and child: the same inode after restore', async () => {
  await fixtureRoundTrip('ghostshare', path.join(root, 'images'), { extraFds: true });
});
