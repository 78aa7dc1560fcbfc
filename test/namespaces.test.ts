// A tree in namespaces of its own: dumped and restored into new ones with the
// plain CLI; ids inside stay, the outer pid is reported (--pidfile, --json).
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Fixture, initHarness, runStasis, describeCli, tmpDir, waitGone, reap, reapZombies, sleep } from './harness';
import { tryKill, abi } from '../src/sys';

let root: string;
before(() => { initHarness(); root = tmpDir('ns'); });
after(() => fs.rmSync(root, { recursive: true, force: true }));

function nspid(pid: number): string {
  return /^NSpid:\s*(.*)$/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))![1].trim();
}

/** How long a tree stays down in tests where the down time matters (the scenario, not a wait). */
const DOWNTIME_MS = 1500;

/**
 * Dump the init, restore it, let it check itself. `around(init)` runs just
 * before the dump and returns what to check once it is restored.
 */
async function roundTrip(kinds: string, around?: (init: number) => Promise<(outer: number) => Promise<void>>): Promise<void> {
  const fx = await Fixture.start('nsinit', { args: [kinds] });
  try {
    const init = Number(/^CHILD (\d+)$/m.exec(fx.log())![1]);
    await fx.waitLog(/^INIT_READY$/m);
    assert.match(nspid(init), new RegExp(`^${init}\\s+1$`), 'pid 1 in its own pid namespace');
    const dir = path.join(root, kinds.replace(/,/g, '-'));
    const check = await around?.(init);
    const d = runStasis(['dump', '-t', String(init), '-D', dir]);
    assert.equal(d.status, 0, describeCli(d));
    await waitGone([init]);
    if (check) await sleep(DOWNTIME_MS);
    const r = runStasis(['restore', '-D', dir, '-d', '--pidfile', 'init.pid', '--json']);
    assert.equal(r.status, 0, describeCli(r));
    const outer = Number(fs.readFileSync(path.join(dir, 'init.pid'), 'utf8'));
    assert.equal(JSON.parse(r.stdout).pid, outer, 'the JSON result names the outer pid');
    assert.match(nspid(outer), new RegExp(`^${outer}\\s+1$`), 'pid 1 again, in a new pid namespace');
    for (const k of kinds.split(',')) {
      const ns = (p: number | 'self') => fs.readlinkSync(`/proc/${p}/ns/${k}`);
      assert.notEqual(ns(outer), ns('self'), `a ${k} namespace of its own`);
    }
    await check?.(outer);
    tryKill(outer, abi.SIG.SIGTERM);
    const st = await reap(outer, 10000);
    assert.deepEqual(st, { kind: 'exited', pid: outer, code: 0 }, fx.log());
    assert.match(fx.log(), /^PASS$/m);
  } finally {
    await fx.kill();
    reapZombies();
  }
}

test('pid + uts namespaces: pid 1 and the hostname survive dump → restore', () => roundTrip('pid,uts'));

/** CLOCK_MONOTONIC of a process's time namespace, in ms: ours plus its offset. */
function nsMonotonicMs(pid: number): number {
  const m = /^monotonic\s+(-?\d+)\s+(\d+)/m.exec(fs.readFileSync(`/proc/${pid}/timens_offsets`, 'utf8'))!;
  return Number(process.hrtime.bigint() / 1000000n) + Number(m[1]) * 1000 + Number(m[2]) / 1e6;
}

test('time namespace: its clocks carry on from their dumped values, the time it was down not counted', async () => {
  await roundTrip('pid,time', async (init) => {
    const atDump = nsMonotonicMs(init);
    const t0 = Date.now();
    return async (outer: number) => {
      const after = nsMonotonicMs(outer);
      const elapsed = Date.now() - t0;
      assert.ok(after >= atDump, `the clock went on (${after} ≥ ${atDump})`);
      assert.ok(after - atDump < elapsed - DOWNTIME_MS / 2, `the ${DOWNTIME_MS} ms it was down are not counted: ${after - atDump} ms passed for it, ${elapsed} for us`);
    };
  });
});

test('IPC namespace: message queues with their messages, semaphores, shared memory with its contents, same ids', () => roundTrip('pid,ipc'));

test('mount namespace: its own /proc, a tmpfs with its files, a read-only bind, files and cwd open on them', () => roundTrip('pid,mnt'));
