// File leases (F_SETLEASE): read and write leases, leases being broken
// (towards unlocked and towards a read lease), two descriptions of one file
// each with its own, and a broken lease held only through a child's fd.
// Dumped with no option (criu needs --file-locks and then leaves the
// program a second break signal: zdtm file_lease02-04), re-taken on restore
// in the same state; the fixture checks each fd's F_GETLEASE, that writers
// and readers are still held off, and that no signal came but its own three.
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Fixture, initHarness, runStasis, describeCli, tmpDir, restoreDetached, waitGone, crit } from './harness';
import { abi } from '../src/sys';
import { FL_KIND, LEASE_BREAKING } from '../src/images/criu';

let root: string;
before(() => { initHarness(); root = tmpDir('leases'); });
after(() => fs.rmSync(root, { recursive: true, force: true }));

const { RDLCK, WRLCK, UNLCK } = abi.LOCK_TYPE;

test('leases, active and being broken, come back as they were, with no break signal more', async () => {
  const fx = await Fixture.start('leases', { extraFds: true });
  const child = Number(fx.manifest.values.get('CHILD')?.[0]);
  try {
    const dir = path.join(root, 'images');
    const d = runStasis(['dump', '-t', String(fx.pid), '-D', dir]);
    assert.equal(d.status, 0, describeCli(d));
    await fx.reap();
    await waitGone([fx.pid, child]);
    const locks = JSON.parse(crit(['decode', '-i', path.join(dir, 'file-locks.img')])).entries as { flag: number; type: number; pid: number }[];
    const leases = locks.filter((l) => l.flag === FL_KIND.LEASE);
    assert.deepEqual(leases.map((l) => [l.pid === child ? 'child' : 'parent', l.type]).sort(), [
      ['child', UNLCK | LEASE_BREAKING],
      ['parent', RDLCK], ['parent', RDLCK], ['parent', WRLCK],
      ['parent', RDLCK | LEASE_BREAKING], ['parent', UNLCK | LEASE_BREAKING],
    ].sort(), 'one entry per leased description, breaking ones with their target (crit reads them)');
    restoreDetached(dir);
    fx.restored();
    const { log } = await fx.terminate();
    assert.match(log, /^PASS$/m, log);
  } finally {
    await fx.kill();
  }
});
