// Unix sockets never connected (fixtures/unix-unconn.c): a stream and a
// seqpacket socket that have no queue to peek (recvmsg says EINVAL and
// ENOTCONN), listeners bound with relative names whose files keep their
// owner and mode (file_perms) for an unprivileged process to connect to
// after restore; SO_PASSSEC, SO_DONTROUTE and SO_NO_CHECK carried. A socket
// connected to no peer with data queued (sent to its name) gets its message
// back (made as one end of a pair: sockets-unix-embryo.ts).
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Fixture, initHarness, tmpDir, readWithPayloads } from './harness';
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

test('a bound datagram socket with a message sent to its name queued (no peer): dump → restore → the message is there', async () => {
  const fx = await Fixture.start('unix-unconn', { extraFds: true, args: ['queued'] });
  try {
    const dir = path.join(root, 'queued');
    await dumpKillRestore(fx, dir);
    const dg = readImage(dir, 'files.img', 'FILES', 'file_entry').find((f) => f.usk?.name.toString().startsWith('dg.sock'))!.usk!;
    assert.equal(dg.peer, 0);
    const q = readWithPayloads(dir, 'sk-queues.img', 'SK_QUEUES', 'sk_packet_entry', (e) => e.length).filter((e) => e.id_for === dg.id);
    assert.deepEqual(q.map((e) => e.extra.toString()), ['q']);
    const { log } = await fx.terminate();
    assert.match(log, /^PASS$/m, log);
  } finally {
    await fx.kill();
  }
});
