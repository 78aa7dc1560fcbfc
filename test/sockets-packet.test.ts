// Packet sockets (SOCK_RAW, SOCK_DGRAM, SOCK_PACKET) in a network namespace
// of the fixture's own: bound interface, TPACKET version, options,
// memberships, rings and a fanout group as they were; a frame queued to read
// is refused (nothing of ours could queue it again), and so is a ring mapped
// in memory (its frames are the kernel's pages).
import { test, before, after } from 'node:test';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { initHarness, tmpDir } from './harness';
import { fixtureRoundTrip, fixtureRefused } from './net-helpers';

let root: string;
before(() => { initHarness(); root = tmpDir('packetsk'); });
after(() => fs.rmSync(root, { recursive: true, force: true }));

test('packet sockets: binding, version, reserve, aux data, memberships, rings and fanout as they were; a frame reaches the fanout group after restore', async () => {
  await fixtureRoundTrip('packetsk', path.join(root, 'images'), { extraFds: true });
});

for (const [what, arg, re] of [
  ['a frame queued to read', 'queued', /packet socket \d+ has packets queued to read; not supported/],
  ['its ring mapped in memory', 'mmap', /mapping of a socket's memory \(socket:\[\d+\]: a packet socket's rings, mmap\(\)ed\) is not supported yet/],
] as const) {
  test(`a packet socket with ${what}: refused with one clear line; the process runs on`, async () => {
    await fixtureRefused('packetsk', [arg], path.join(root, arg), re, { extraFds: true });
  });
}
