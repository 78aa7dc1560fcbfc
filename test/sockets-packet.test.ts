// Packet sockets (SOCK_RAW, SOCK_DGRAM, SOCK_PACKET) in a network namespace
// of the fixture's own: bound interface, TPACKET version, options,
// memberships, rings and a fanout group as they were; a frame queued to read
// is refused (nothing of ours could queue it again).
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Fixture, initHarness, runStasis, tmpDir, tracerPid, procState } from './harness';
import { fixtureRoundTrip, assertOneLineError } from './net-helpers';

let root: string;
before(() => { initHarness(); root = tmpDir('packetsk'); });
after(() => fs.rmSync(root, { recursive: true, force: true }));

test('packet sockets: binding, version, reserve, aux data, memberships, rings and fanout as they were; a frame reaches the fanout group after restore', async () => {
  await fixtureRoundTrip('packetsk', path.join(root, 'images'), { extraFds: true });
});

test('a packet socket with a frame queued to read: refused with one clear line; the process runs on', async () => {
  const fx = await Fixture.start('packetsk', { extraFds: true, args: ['queued'] });
  try {
    const dir = path.join(root, 'queued');
    const r = runStasis(['dump', '-t', String(fx.pid), '-D', dir]);
    assertOneLineError(r, /packet socket \d+ has packets queued to read; not supported/);
    assert.ok(!fs.existsSync(path.join(dir, 'inventory.img')), 'no inventory: not a checkpoint');
    assert.equal(tracerPid(fx.pid), 0, 'released');
    assert.match(procState(fx.pid), /^[RS]$/, 'running');
    const { log } = await fx.terminate();
    assert.match(log, /^PASS$/m, log);
  } finally {
    await fx.kill();
  }
});
