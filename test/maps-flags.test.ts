// mmap() flags that show in smaps VmFlags and that the program chose:
// MAP_NORESERVE ("nr") and MAP_DROPPABLE ("dp"), carried in vma_entry.flags.
import { test, before, after } from 'node:test';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { initHarness, tmpDir } from './harness';
import { fixtureRoundTrip } from './net-helpers';

let root: string;
before(() => { initHarness(); root = tmpDir('mapflags'); });
after(() => fs.rmSync(root, { recursive: true, force: true }));

test('MAP_NORESERVE and MAP_DROPPABLE mappings: the same VmFlags after restore', async () => {
  await fixtureRoundTrip('mapflags', path.join(root, 'images'));
});
