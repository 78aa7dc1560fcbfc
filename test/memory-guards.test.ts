// Guard pages (madvise MADV_GUARD_INSTALL): found by PAGEMAP_SCAN's
// PAGE_IS_GUARD, never read, written as criu does (vma_entry items with
// status VMA_AREA_GUARD after the VMAs) and installed again on restore —
// on anonymous and file mappings, with MADV_WIPEONFORK on one (fork drops
// its guards: a child forked after the restore must find it so too).
import { test, before } from 'node:test';
import * as assert from 'node:assert/strict';
import * as path from 'node:path';
import { Fixture, initHarness, runStasis, describeCli, tmpDir, restoreDetached, waitGone, crit } from './harness';
import { VMA } from '../src/images/criu';

before(() => initHarness());

test('guard pages: listed after the VMAs, their pages not in the images, installed again; the program finds each where it was', async () => {
  const fx = await Fixture.start('guards');
  try {
    const dir = path.join(tmpDir('guards'), 'images');
    const d = runStasis(['dump', '-t', String(fx.pid), '-D', dir]);
    assert.equal(d.status, 0, describeCli(d));
    await fx.reap();
    await waitGone([fx.pid]);
    const mm = JSON.parse(crit(['decode', '-i', path.join(dir, `mm-${fx.pid}.img`)])).entries[0] as { vmas: { start: string; end: string; status: number }[] };
    const guards = mm.vmas.filter((v) => v.status & VMA.AREA_GUARD);
    const pages = guards.map((g) => (Number(BigInt(g.end) - BigInt(g.start)) / 4096));
    assert.deepEqual(pages.sort(), [1, 1, 1, 2], 'four guard ranges: 2 + 1 anon, 1 in the file, 1 wiped on fork');
    const firstGuard = mm.vmas.findIndex((v) => v.status & VMA.AREA_GUARD);
    assert.ok(mm.vmas.slice(firstGuard).every((v) => v.status & VMA.AREA_GUARD), 'after the VMAs, as criu lists them');
    restoreDetached(dir);
    fx.restored();
    const { log } = await fx.terminate();
    assert.match(log, /^PASS$/m, log);
  } finally {
    await fx.kill();
  }
});
