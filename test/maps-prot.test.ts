// Shared file mappings keep the access their file was opened with
// (VM_MAYWRITE, smaps "mw"): one made read-only from a read-write file can
// be made writable again after restore, one from a read-only file cannot.
import { test, before, after } from 'node:test';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { initHarness, tmpDir } from './harness';
import { fixtureRoundTrip } from './net-helpers';

let root: string;
before(() => { initHarness(); root = tmpDir('mapprot'); });
after(() => fs.rmSync(root, { recursive: true, force: true }));

test('read-only shared mappings of a read-write and of a read-only file: mprotect(PROT_WRITE) works and fails as before', async () => {
  await fixtureRoundTrip('mapprot', path.join(root, 'images'));
});
