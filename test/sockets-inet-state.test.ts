// Inet sockets whose state is more than their addresses: TCP connections that
// ended (both ends CLOSE, shut both ways, their ports held by TIME_WAIT) come
// back reading end-of-file and failing to write, on their ports; IP-level
// options (IP_FREEBIND with an address on no host, IP_TOS, IP_TTL,
// IP_PKTINFO) come back, set before the bind.
import { test, before, after } from 'node:test';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { initHarness, tmpDir } from './harness';
import { fixtureRoundTrip } from './net-helpers';

let root: string;
before(() => { initHarness(); root = tmpDir('inetstate'); });
after(() => fs.rmSync(root, { recursive: true, force: true }));

test('ended TCP connections, a fresh TCP socket, a UDP socket with IP options: as they were', async () => {
  await fixtureRoundTrip('inetstate', path.join(root, 'images'), { extraFds: true });
});
