// AIO rings (io_setup): an unused one, one with completions waiting, one
// whose tail has wrapped below its head, one whose waiting events lie in a
// page the process never touched. Dumped as criu does (the ring's
// pages, an aio_ring_entry each), made again at restore by io_setup at their
// addresses, with head, tail and waiting events as they were: the process
// reaps exactly what waited, then submits and reaps anew.
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Fixture, initHarness, tmpDir, readMapsText } from './harness';
import { readImage } from '../src/images/image';
import { VMA } from '../src/images/criu';
import { dumpKillRestore } from './net-helpers';

let root: string;
before(() => { initHarness(); root = tmpDir('aioring'); });
after(() => fs.rmSync(root, { recursive: true, force: true }));

test('four AIO rings (unused, events waiting, tail wrapped, events in an untouched page): at their addresses with head, tail and events after restore', async () => {
  const fx = await Fixture.start('aioring', { extraFds: true });
  try {
    const log = fs.readFileSync(fx.logPath, 'utf8');
    const rings = [...log.matchAll(/^RING (\w) (0x[0-9a-f]+) (\d+) (\d+) (\d+)$/gm)].map((m) => ({ name: m[1], addr: BigInt(m[2]) }));
    assert.equal(rings.length, 4);
    const dir = path.join(root, 'images');
    await dumpKillRestore(fx, dir);
    const mm = readImage(dir, `mm-${fx.pid}.img`, 'MM', 'mm_entry')[0];
    assert.deepEqual((mm.aios ?? []).map((a) => a.id).sort(), rings.map((r) => r.addr).sort());
    for (const a of mm.aios!) {
      const v = mm.vmas!.find((x) => x.start === a.id)!;
      assert.equal(v.status, VMA.AREA_AIORING);
      assert.equal(Number(v.end - v.start), a.ring_len);
    }
    const maps = readMapsText(fx.pid);
    for (const r of rings) assert.match(maps, new RegExp(`^${r.addr.toString(16)}-[0-9a-f]+ .* /\\[aio\\] \\(deleted\\)$`, 'm'), `ring ${r.name} in maps`);
    const { log: out } = await fx.terminate();
    assert.match(out, /^PASS$/m, out);
  } finally {
    await fx.kill();
  }
});
