// TCP connections on their way to closing, both ends in the dumped tree, in a
// network namespace of its own (fixtures/tcpclosing.c):
//  - FIN_WAIT1 (our FIN queued behind data the peer has no room for yet) is
//    carried by --tcp-established: restored in FIN_WAIT1 (ss in the restored
//    namespace says so), the peer gets every byte then the FIN, and what the
//    peer sends still arrives; without the flag the dump refuses it;
//  - FIN_WAIT2 / CLOSE_WAIT (a FIN acknowledged, a FIN received) are refused
//    with the reason, and the tree goes on unchanged.
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { Fixture, initHarness, tmpDir, runStasis } from './harness';
import { readImage } from '../src/images/image';
import { dumpKillRestore, assertOneLineError } from './net-helpers';
import { abi } from '../src/sys';

let root: string;
before(() => { initHarness(); root = tmpDir('tcpclosing'); });
after(() => fs.rmSync(root, { recursive: true, force: true }));

/** `ss -tan` state words of the TCP sockets in pid's network namespace, sorted. */
function ssStates(pid: number): string[] {
  const r = spawnSync('nsenter', [`--net=/proc/${pid}/ns/net`, 'ss', '-tanH'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.split('\n').filter((l) => l.trim()).map((l) => l.trim().split(/\s+/)[0]).sort();
}

test('FIN_WAIT1 with unsent data: carried, the peer gets all of it and the FIN', async () => {
  const fx = await Fixture.start('tcpclosing', { extraFds: true, args: ['fin-wait1'] });
  try {
    assert.deepEqual(ssStates(fx.pid), ['ESTAB', 'FIN-WAIT-1']);
    const bare = runStasis(['dump', '-t', String(fx.pid), '-D', path.join(root, 'bare')]);
    assertOneLineError(bare, /(established|closing \(FIN_WAIT1\)) TCP connection \(port \d+ ↔ \d+\); dump with --tcp-established to take it$/);
    const dir = path.join(root, 'wait1');
    await dumpKillRestore(fx, dir, { dumpArgs: ['--tcp-established'] });
    const isk = readImage(dir, 'files.img', 'FILES', 'file_entry').filter((f) => f.isk).map((f) => f.isk!);
    assert.deepEqual(isk.map((e) => e.state).sort(), [abi.TCP_STATE.ESTABLISHED, abi.TCP_STATE.FIN_WAIT1]);
    assert.deepEqual(ssStates(fx.pid), ['ESTAB', 'FIN-WAIT-1'], 'the same states after the restore');
    const { log } = await fx.terminate();
    assert.match(log, /^PASS$/m, log);
    const sent = Number(/^server sent (\d+) bytes$/m.exec(log)![1]);
    assert.ok(sent > 0);
    assert.match(log, new RegExp(`^client read ${sent} bytes and the FIN$`, 'm'));
  } finally {
    await fx.kill();
  }
});

test('FIN_WAIT2 / CLOSE_WAIT: refused with the reason, the tree unchanged', async () => {
  const fx = await Fixture.start('tcpclosing', { extraFds: true, args: ['fin-wait2'] });
  try {
    const r = runStasis(['dump', '-t', String(fx.pid), '-D', path.join(root, 'wait2'), '--tcp-established']);
    assertOneLineError(r, /TCP connection \(port \d+ ↔ \d+\) in state (FIN_WAIT2: its FIN was acknowledged by the peer|CLOSE_WAIT: the peer's FIN was received); rebuilding that needs a forged (acknowledgment|FIN) from the peer; not supported$/);
    assert.deepEqual(ssStates(fx.pid), ['CLOSE-WAIT', 'FIN-WAIT-2']);
    const { log } = await fx.terminate();
    assert.match(log, /^PASS$/m, log);
  } finally {
    await fx.kill();
  }
});
