// Netlink sockets in a network namespace of the fixture's own: port ids
// (given and chosen by the kernel), groups (past the first 32 too), a
// connected one, netlink flags; a message queued to read is refused
// (nothing of ours could queue it again).
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Fixture, initHarness, runStasis, tmpDir, tracerPid, procState } from './harness';
import { fixtureRoundTrip, assertOneLineError } from './net-helpers';

let root: string;
before(() => { initHarness(); root = tmpDir('netlinksk'); });
after(() => fs.rmSync(root, { recursive: true, force: true }));

test('netlink sockets: port ids, groups, peer and flags as they were; messages go through after restore', async () => {
  await fixtureRoundTrip('netlinksk', path.join(root, 'images'), { extraFds: true });
});

test('a netlink socket with a message queued to read: refused with one clear line; the process runs on', async () => {
  const fx = await Fixture.start('netlinksk', { extraFds: true, args: ['queued'] });
  try {
    const dir = path.join(root, 'queued');
    const r = runStasis(['dump', '-t', String(fx.pid), '-D', dir]);
    assertOneLineError(r, /netlink socket \d+ has messages queued to read; not supported/);
    assert.ok(!fs.existsSync(path.join(dir, 'inventory.img')), 'no inventory: not a checkpoint');
    assert.equal(tracerPid(fx.pid), 0, 'released');
    assert.match(procState(fx.pid), /^[RS]$/, 'running');
    const { log } = await fx.terminate();
    assert.match(log, /^PASS$/m, log);
  } finally {
    await fx.kill();
  }
});
