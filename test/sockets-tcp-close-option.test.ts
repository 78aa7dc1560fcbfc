// criu's --tcp-close: TCP connections in any state (established, half
// closed) are dumped as sockets only — no TCP_REPAIR, no network lock — and
// restored closed as criu leaves them (a socket never connected, shut both
// ways); the inventory says so and a restore without the flag is refused
// before anything is created. The listener comes back listening.
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Fixture, initHarness, tmpDir, runStasis, describeCli, restoreDetached, waitGone, crit } from './harness';
import { abi } from '../src/sys';

let root: string;
before(() => { initHarness(); root = tmpDir('tcpclose'); });
after(() => fs.rmSync(root, { recursive: true, force: true }));

test('--tcp-close: connections dumped without their state, restored closed; the listener still listens', async () => {
  const fx = await Fixture.start('tcpclose', { extraFds: true });
  try {
    const dir = path.join(root, 'images');
    const d = runStasis(['dump', '-t', String(fx.pid), '-D', dir, '--tcp-close']);
    assert.equal(d.status, 0, describeCli(d));
    await fx.reap();
    await waitGone([fx.pid]);
    const inv = JSON.parse(crit(['decode', '-i', path.join(dir, 'inventory.img')])).entries[0];
    assert.equal(inv.tcp_close, true);
    assert.deepEqual(fs.readdirSync(dir).filter((f) => f.startsWith('tcp-stream')), [], 'no connection state');
    const files = JSON.parse(crit(['decode', '-i', path.join(dir, 'files.img')])).entries as { isk?: { state: string | number } }[];
    assert.equal(files.filter((f) => f.isk).length, 5, 'the listener and four connected sockets');
    const without = runStasis(['restore', '-D', dir, '-d']);
    assert.equal(without.status, 2, describeCli(without));
    assert.match(without.stderr, /^stasis: .*inventory\.img: dumped with --tcp-close: restore with --tcp-close too/);
    assert.equal(without.stderr.trim().split('\n').length, 1);
    assert.ok(!fs.existsSync(`/proc/${fx.pid}`), 'nothing created');
    restoreDetached(dir, ['--tcp-close']);
    fx.restored();
    const { log } = await fx.terminate();
    assert.match(log, /^PASS$/m, log);
  } finally {
    await fx.kill();
  }
});

test('without --tcp-close the half-closed pair is refused at dump; the tree runs on', async () => {
  const fx = await Fixture.start('tcpclose', { extraFds: true });
  try {
    const r = runStasis(['dump', '-t', String(fx.pid), '-D', path.join(root, 'bare'), '--tcp-established']);
    assert.equal(r.status, 1, describeCli(r));
    assert.match(r.stderr, /in state (FIN_WAIT2|CLOSE_WAIT): .*; not supported$/m);
    assert.ok(fx.alive);
    void abi;
  } finally {
    await fx.kill();
  }
});
