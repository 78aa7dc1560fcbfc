// A unix datagram socket connected to a peer outside the dumped tree (the
// test's own socket): the dump is refused unless --ext-unix-sk; with it the
// restored socket is connected to the peer's name again and its messages
// arrive there, counting on.
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Fixture, initHarness, tmpDir, runStasis, waitFor } from './harness';
import { dumpKillRestore, assertOneLineError } from './net-helpers';
import { sys, sysTry, addressOf } from '../src/sys';

let root: string;
let peer = -1;
let sockPath: string;

before(() => {
  initHarness();
  root = tmpDir('extunix');
  sockPath = path.join(root, 'peer.sock');
  peer = sys('socket', 1 /* AF_UNIX */, 2 /* SOCK_DGRAM */ | 0o4000 /* NONBLOCK */ | 0o2000000, 0);
  const a = Buffer.alloc(110);
  a.writeUInt16LE(1, 0);
  a.write(sockPath, 2);
  sys('bind', peer, addressOf(a), a.length);
});

after(() => {
  if (peer >= 0) sysTry('close', peer);
  fs.rmSync(root, { recursive: true, force: true });
});

/** Every message waiting on our socket, as numbers. */
function drain(): number[] {
  const out: number[] = [];
  const b = Buffer.alloc(64);
  for (;;) {
    const n = sysTry('recvfrom', peer, addressOf(b), b.length, 0, 0, 0);
    if (n < 0) return out;
    const m = /^msg (\d+)$/.exec(b.subarray(0, n).toString());
    if (m) out.push(Number(m[1]));
  }
}

test('a datagram socket connected outside the tree: refused, then re-connected by name with --ext-unix-sk', async () => {
  const fx = await Fixture.start('extdgram', { args: [sockPath], extraFds: true });
  try {
    await waitFor('messages from the fixture', () => drain().length > 0);
    const refused = runStasis(['dump', '-t', String(fx.pid), '-D', path.join(root, 'refused')]);
    assertOneLineError(refused, /connected to socket \d+ outside the dumped tree; dump with --ext-unix-sk/);
    // Still running and sending (we read what it sends, so its sends never block).
    const c0 = fx.counter();
    await waitFor('the refused fixture to keep sending', () => { drain(); return fx.counter() > c0 + 3n; });
    await dumpKillRestore(fx, path.join(root, 'images'), { dumpArgs: ['--ext-unix-sk'] });
    const last = fx.counter();
    drain();
    const got: number[] = [];
    await waitFor('messages from the restored fixture', () => { got.push(...drain()); return got.length >= 3; }, 5000);
    assert.ok(got[0] >= Number(last) - 1, `counting on from ${last}: ${got.join(',')}`);
    const { log } = await fx.terminate();
    assert.match(log, /^PASS$/m, log);
  } finally {
    await fx.kill();
  }
});
