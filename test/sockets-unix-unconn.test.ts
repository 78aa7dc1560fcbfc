// Unix sockets never connected (fixtures/unix-unconn.c): a stream and a
// seqpacket socket that have no queue to peek (recvmsg says EINVAL and
// ENOTCONN), listeners bound with relative names whose files keep their
// owner and mode (file_perms) for an unprivileged process to connect to
// after restore; SO_PASSSEC, SO_DONTROUTE and SO_NO_CHECK carried.
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Fixture, initHarness, tmpDir } from './harness';
import { readImage } from '../src/images/image';
import { dumpKillRestore } from './net-helpers';

let root: string;
before(() => { initHarness(); root = tmpDir('sunconn'); });
after(() => fs.rmSync(root, { recursive: true, force: true }));

test('unconnected stream and seqpacket unix sockets, listeners on relative names, as uid 65534: dump → restore → PASS', async () => {
  const fx = await Fixture.start('unix-unconn', { extraFds: true });
  try {
    const dir = path.join(root, 'img');
    await dumpKillRestore(fx, dir);
    const usk = readImage(dir, 'files.img', 'FILES', 'file_entry').filter((f) => f.usk).map((f) => f.usk!);
    const named = usk.filter((u) => u.name.length).map((u) => [u.name.toString().replace(/\0+$/, ''), u.file_perms]).sort();
    assert.deepEqual(named, [
      ['rel.sock', { mode: 0o755, uid: 65534, gid: 65534 }],
      ['rel2.sock', { mode: 0o755, uid: 65534, gid: 65534 }],
    ]);
    assert.ok(!fs.existsSync(path.join(dir, 'sk-queues.img')) || fs.statSync(path.join(dir, 'sk-queues.img')).size <= 12, 'nothing queued');
    const { log } = await fx.terminate();
    assert.match(log, /^PASS$/m, log);
  } finally {
    await fx.kill();
  }
});
