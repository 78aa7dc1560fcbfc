// Netlink sockets in a network namespace of the fixture's own: port ids
// (given and chosen by the kernel), groups (past the first 32 too), a
// connected one, netlink flags; a message queued to read is refused
// (nothing of ours could queue it again).
import { test, before, after } from 'node:test';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { initHarness, tmpDir } from './harness';
import { fixtureRoundTrip, fixtureRefused } from './net-helpers';

let root: string;
before(() => { initHarness(); root = tmpDir('netlinksk'); });
after(() => fs.rmSync(root, { recursive: true, force: true }));

test('netlink sockets: port ids, groups, peer and flags as they were; messages go through after restore', async () => {
  await fixtureRoundTrip('netlinksk', path.join(root, 'images'), { extraFds: true });
});

test('a netlink socket with a message queued to read: refused with one clear line; the process runs on', async () => {
  await fixtureRefused('netlinksk', ['queued'], path.join(root, 'queued'), /netlink socket \d+ has messages queued to read; not supported/, { extraFds: true });
});
