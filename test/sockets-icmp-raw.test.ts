// Ping sockets (IPv4, IPv6), raw sockets (IP_HDRINCL, ICMP filters, a
// connected one) and UDP-Lite sockets (with their checksum coverage), in a
// network namespace of the fixture's own; a raw socket with packets queued
// to read is refused (nothing of ours could queue them again).
import { test, before, after } from 'node:test';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { initHarness, tmpDir } from './harness';
import { fixtureRoundTrip, fixtureRefused } from './net-helpers';

let root: string;
before(() => { initHarness(); root = tmpDir('icmpraw'); });
after(() => fs.rmSync(root, { recursive: true, force: true }));

test('ping, raw and UDP-Lite sockets: bound, connected, options and filters as they were; they send and receive after restore', async () => {
  await fixtureRoundTrip('rawsk', path.join(root, 'images'), { extraFds: true });
});

test('a raw ICMP socket with packets queued to read: refused with one clear line; the process runs on', async () => {
  await fixtureRefused('rawsk', ['queued'], path.join(root, 'queued'), /raw icmp socket has data queued to read; not supported/, { extraFds: true });
});
