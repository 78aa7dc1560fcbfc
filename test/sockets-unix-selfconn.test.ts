// Datagram unix sockets connected to themselves (fixtures/unix-selfconn.c;
// zdtm's sockets_dgram has one): bound, then connected to their own name —
// a path and an abstract name — with a datagram each sent to itself still
// queued. Restored alone (not as one end of a pair), connected to their own
// name again, the datagram back in the queue: the fixture reads it, writes to
// itself and reads that too.
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Fixture, initHarness, tmpDir } from './harness';
import { readImage } from '../src/images/image';
import { dumpKillRestore } from './net-helpers';

let root: string;
before(() => { initHarness(); root = tmpDir('selfconn'); });
after(() => fs.rmSync(root, { recursive: true, force: true }));

test('datagram sockets connected to themselves (path, abstract name) with a datagram queued: dump → restore → PASS', async () => {
  const fx = await Fixture.start('unix-selfconn', { extraFds: true });
  try {
    const dir = path.join(root, 'img');
    await dumpKillRestore(fx, dir);
    const self = readImage(dir, 'files.img', 'FILES', 'file_entry').filter((f) => f.usk && f.usk.peer === f.usk.ino);
    assert.equal(self.length, 2, 'two sockets whose peer is themselves');
    const { log } = await fx.terminate();
    assert.match(log, /^PASS$/m, log);
  } finally {
    await fx.kill();
  }
});
