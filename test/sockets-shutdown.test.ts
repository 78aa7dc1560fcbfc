// Sockets shut down in one direction or both (unix stream, seqpacket and
// datagram pairs, a stream shut before it connected, UDP), with queued data
// that must come back before the shutdown; TCP_NODELAY and TCP_CORK of TCP
// sockets not connected. A seqpacket socket shut for reading ends its queue
// with "end of file": the dump must not peek it forever.
import { test, before, after } from 'node:test';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { initHarness, tmpDir } from './harness';
import { fixtureRoundTrip } from './net-helpers';

let root: string;
before(() => { initHarness(); root = tmpDir('skshutdown'); });
after(() => fs.rmSync(root, { recursive: true, force: true }));

test('shut directions of unix and UDP sockets, queued data, TCP_NODELAY/TCP_CORK: as before the checkpoint', async () => {
  await fixtureRoundTrip('skshutdown', path.join(root, 'images'), { extraFds: true });
});
