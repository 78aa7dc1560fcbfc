// Ping sockets (IPv4, IPv6), raw sockets (IP_HDRINCL, ICMP filters, a
// connected one) and UDP-Lite sockets (with their checksum coverage), in a
// network namespace of the fixture's own; a raw socket with packets queued
// to read is refused (nothing of ours could queue them again).
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Fixture, initHarness, runStasis, tmpDir, tracerPid, procState } from './harness';
import { fixtureRoundTrip, assertOneLineError } from './net-helpers';

let root: string;
before(() => { initHarness(); root = tmpDir('icmpraw'); });
after(() => fs.rmSync(root, { recursive: true, force: true }));

test('ping, raw and UDP-Lite sockets: bound, connected, options and filters as they were; they send and receive after restore', async () => {
  await fixtureRoundTrip('rawsk', path.join(root, 'images'), { extraFds: true });
});

test('a raw ICMP socket with packets queued to read: refused with one clear line; the process runs on', async () => {
  const fx = await Fixture.start('rawsk', { extraFds: true, args: ['queued'] });
  try {
    const dir = path.join(root, 'queued');
    const r = runStasis(['dump', '-t', String(fx.pid), '-D', dir]);
    assertOneLineError(r, /raw icmp socket has data queued to read; not supported/);
    assert.ok(!fs.existsSync(path.join(dir, 'inventory.img')), 'no inventory: not a checkpoint');
    assert.equal(tracerPid(fx.pid), 0, 'released');
    assert.match(procState(fx.pid), /^[RS]$/, 'running');
    const { log } = await fx.terminate();
    assert.match(log, /^PASS$/m, log);
  } finally {
    await fx.kill();
  }
});
