// A tree in namespaces of its own: dumped and restored into new ones with the
// plain CLI; ids inside stay, the outer pid is reported (--pidfile, --json).
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { Fixture, initHarness, runStasis, describeCli, tmpDir, waitGone, waitFor, reap, reapZombies, sleep, buildFixture } from './harness';
import { tryKill, abi } from '../src/sys';
import { readImage } from '../src/images/image';

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
  let outer = 0;
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
    outer = Number(fs.readFileSync(path.join(dir, 'init.pid'), 'utf8'));
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
    outer = 0;
  } finally {
    if (outer) tryKill(outer, abi.SIG.SIGKILL);
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

test('network namespace: links (loopback, a veth pair), addresses, routes, sysctls, firewall, a listener', () => roundTrip('pid,net'));

test('everything at once: pid, mount, UTS, IPC, network and time namespaces', () => roundTrip('pid,mnt,uts,ipc,net,time'));

test('unshare --pid --mount --uts --ipc --net --fork --mount-proc: a tmpfs with a file, a hostname, a counter; bare CLI', async () => {
  const counter = buildFixture('counter');
  const dir = tmpDir('unshare');
  const log = path.join(dir, 'log');
  const script = `hostname stasis-unshared && mkdir -p ${dir}/t && mount -t tmpfs -o size=64k box ${dir}/t && echo kept > ${dir}/t/file && exec ${counter}`;
  const sh = spawnSync('/bin/sh', ['-c', `setsid unshare --pid --mount --uts --ipc --net --fork --mount-proc /bin/sh -c '${script}' </dev/null >${log} 2>&1 & echo $!`], { encoding: 'utf8' });
  const unsharePid = Number(sh.stdout.trim());
  let outer = 0;
  try {
    await waitFor('the counter inside to be READY', () => /^READY$/m.test(fs.readFileSync(log, 'utf8')), 10000);
    const init = Number(fs.readFileSync(`/proc/${unsharePid}/task/${unsharePid}/children`, 'utf8').trim());
    assert.match(nspid(init), new RegExp(`^${init}\\s+1$`));
    const images = path.join(dir, 'images');
    const d = runStasis(['dump', '-t', String(init), '-D', images]);
    assert.equal(d.status, 0, describeCli(d));
    // unshare reports its child's death on the same log: the log goes back to what the images hold.
    await reap(unsharePid, 5000);
    const size = Number(readImage(images, 'files.img', 'FILES', 'file_entry').find((f) => f.reg?.name === log)!.reg!.size);
    fs.truncateSync(log, size);
    const r = runStasis(['restore', '-D', images, '-d', '--pidfile', 'init.pid']);
    assert.equal(r.status, 0, describeCli(r));
    outer = Number(fs.readFileSync(path.join(images, 'init.pid'), 'utf8'));
    assert.match(nspid(outer), new RegExp(`^${outer}\\s+1$`), 'pid 1 of a new pid namespace');
    assert.equal(spawnSync('nsenter', ['-t', String(outer), '-u', 'hostname'], { encoding: 'utf8' }).stdout.trim(), 'stasis-unshared');
    assert.equal(fs.readFileSync(`/proc/${outer}/root${dir}/t/file`, 'utf8'), 'kept\n', 'the tmpfs with its file');
    assert.equal(fs.readlinkSync(`/proc/${outer}/root/proc/self`.replace('self', '1/root')), '/', 'its own /proc');
    const ticks = () => [...fs.readFileSync(log, 'utf8').matchAll(/^TICK 1 (\d+)$/gm)].map((m) => Number(m[1]));
    const before = ticks().at(-1)!;
    await waitFor('the counter to go on from where it was', () => ticks().some((t) => t > before + 40), 10000);
    tryKill(outer, abi.SIG.SIGTERM);
    await reap(outer, 10000);
    assert.match(fs.readFileSync(log, 'utf8'), /^PASS$/m);
  } finally {
    if (outer) tryKill(outer, abi.SIG.SIGKILL);
    tryKill(unsharePid, abi.SIG.SIGKILL);
    reapZombies();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
