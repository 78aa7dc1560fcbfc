// Unix sockets never connected (fixtures/unix-unconn.c): a stream and a
// seqpacket socket that have no queue to peek (recvmsg says EINVAL and
// ENOTCONN), listeners bound with relative names whose files keep their
// owner and mode (file_perms) for an unprivileged process to connect to
// after restore; SO_PASSSEC, SO_DONTROUTE and SO_NO_CHECK carried. A socket
// connected to no peer with data queued (sent to its name) is refused: only
// a pair's queues are sent again.
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Fixture, initHarness, tmpDir, runStasis, describeCli, waitFor, tracerPid, procState } from './harness';
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

test('a bound datagram socket with a message sent to its name queued: refused at dump, the message still there', async () => {
  const fx = await Fixture.start('unix-unconn', { extraFds: true, args: ['queued'] });
  try {
    const r = runStasis(['dump', '-t', String(fx.pid), '-D', path.join(root, 'queued')]);
    assert.equal(r.status, 1, describeCli(r));
    assert.match(r.stderr, new RegExp(`^stasis: fd \\d+ of pid ${fx.pid}: unix socket \\d+: 1 message\\(s\\) queued on a socket connected to no peer \\(sent to its name\\), which stasis cannot queue again; not supported\n$`));
    await waitFor('untraced', () => tracerPid(fx.pid) === 0, 2000, 5);
    assert.ok(fx.alive && !/^[tTZ]$/.test(procState(fx.pid)), 'still running');
    const { log } = await fx.terminate();
    assert.match(log, /^PASS$/m, log);
  } finally {
    await fx.kill();
  }
});
