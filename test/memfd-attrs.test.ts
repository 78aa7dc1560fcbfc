// memfd inodes: owner and mode carried (memfd_inode_entry.mode), and no
// writer that was not there (a memfd still execs after restore).
import { test, before, after } from 'node:test';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { initHarness, tmpDir } from './harness';
import { fixtureRoundTrip } from './net-helpers';

let root: string;
before(() => { initHarness(); root = tmpDir('memfdx'); });
after(() => fs.rmSync(root, { recursive: true, force: true }));

test('a memfd with mode 0642 and owner 1234:1235, and a memfd executed after restore (fd, read-only reopen, shared and private mappings)', async () => {
  await fixtureRoundTrip('memfdexec', path.join(root, 'images'), { extraFds: true });
});
