// eventfd, epoll, signalfd and timerfd (fixtures/events.c) survive dump →
// restore: the epoll set (a listening TCP socket, a signalfd, an edge-
// triggered eventfd and a periodic timerfd) reports a connection the test
// makes and a SIGUSR1 the test sends; the eventfd counts (plain and
// semaphore) are intact; the timerfd goes on ticking, a one-shot's unread
// expiration is still there, a long one-shot keeps its remaining time.
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Fixture, initHarness, tmpDir, loadDumpedMemory, dumpedBytes, tracerPid } from './harness';
import { readImage } from '../src/images/image';
import { tryKill, abi } from '../src/sys';
import { Client, dumpKillRestore } from './net-helpers';

const PORT = 47310;

let root: string;
let fx: Fixture;
let fdOf: Map<string, number>;

before(async () => {
  initHarness();
  root = tmpDir('fevents');
  fx = await Fixture.start('events', { extraFds: true, args: [String(PORT)] });
  fdOf = new Map([...fx.log().matchAll(/^FD (\w+) (\d+)$/gm)].map((m) => [m[1], Number(m[2])]));
});

after(async () => {
  await fx?.kill();
  fs.rmSync(root, { recursive: true, force: true });
});

/** Connect to the fixture's listener: it accepts through epoll and says HELLO n. */
async function hello(n: number, what: string): Promise<void> {
  const c = await Client.connect({ port: PORT, host: '127.0.0.1' });
  try {
    await c.waitText(new RegExp(`^HELLO ${n}\\n$`), 3000);
    await fx.waitLog(new RegExp(`^ACCEPTED ${n}$`, 'm'), 3000);
  } catch (e) {
    throw new Error(`${what}: ${(e as Error).message}`);
  } finally {
    c.destroy();
  }
}

/** SIGUSR1 (blocked, read through the signalfd in the epoll set) shows up as SIGNAL line number `n`. */
async function signal(n: number): Promise<void> {
  assert.equal(tryKill(fx.pid, abi.SIG.SIGUSR1), 0);
  const re = new RegExp(`^SIGNAL ${abi.SIG.SIGUSR1} from ${process.pid}$`, 'gm');
  await fx.waitLog(new RegExp(`(?:^SIGNAL ${abi.SIG.SIGUSR1} from ${process.pid}$[\\s\\S]*){${n}}`, 'm'), 3000);
  assert.equal([...fx.log().matchAll(re)].length, n);
}

test('before the dump: the fixture serves through its epoll set', async () => {
  assert.deepEqual([...fdOf.keys()].sort(), ['efd', 'ep', 'lazy', 'lsn', 'once', 'sem', 'sfd', 'tick']);
  await fx.waitLog(/^EVENTFD READY$/m);
  await hello(1, 'before the dump');
  await signal(1);
  await fx.assertCounting();
});

test('dump → restore: the epoll set reports the listener, the signalfd, the timerfd; the counts are intact; PASS', async () => {
  const dir = path.join(root, 'images');
  let dumpedTicks = 0n;
  await dumpKillRestore(fx, dir, {
    between: () => {
      dumpedTicks = dumpedBytes(loadDumpedMemory(dir, fx.pid), fx.addr('COUNTER'), 8).readBigUInt64LE(0);
    },
  });
  // What the images say of each file.
  const files = readImage(dir, 'files.img', 'FILES', 'file_entry');
  const efds = files.filter((f) => f.efd).map((f) => f.efd!);
  assert.deepEqual(efds.map((e) => BigInt(e.counter)).sort(), [3n, 5n], 'eventfd counters');
  const ep = files.find((f) => f.epfd)!.epfd!;
  assert.deepEqual(ep.tfd!.map((t: { tfd: number }) => t.tfd).sort((a: number, b: number) => a - b),
    ['lsn', 'sfd', 'efd', 'tick'].map((k) => fdOf.get(k)!).sort((a, b) => a - b), 'epoll targets');
  assert.equal(BigInt(files.find((f) => f.sgfd)!.sgfd!.sigmask), 1n << BigInt(abi.SIG.SIGUSR1 - 1), 'signalfd mask');
  const tfds = files.filter((f) => f.tfd).map((f) => f.tfd!);
  assert.equal(tfds.length, 3);
  assert.ok(tfds.some((t) => BigInt(t.ticks) === 1n && BigInt(t.isec) === 0n && BigInt(t.insec) === 0n), 'the one-shot: one unread expiration');
  assert.ok(tfds.some((t) => BigInt(t.insec) === 20000000n), 'the ticking one: 20 ms interval');
  assert.ok(tfds.some((t) => BigInt(t.vsec) > 3500n && t.clockid === 0), 'the lazy one: ~3600 s left, CLOCK_REALTIME');
  assert.ok(dumpedTicks > 0n, `ticks counted before the dump: ${dumpedTicks}`);

  assert.equal(tracerPid(fx.pid), 0);
  const logAtRestore = fx.log().length;
  // The timer ticks on, from the dumped total.
  assert.ok(fx.counter() >= dumpedTicks, `tick total ${fx.counter()} went on from the dumped ${dumpedTicks}`);
  await fx.assertCounting();
  await hello(2, 'after the restore (the hello count lives on in memory)');
  await hello(3, 'after the restore, again');
  await signal(2);
  const t0 = fx.counter();
  await new Promise((r) => setTimeout(r, 300));
  const t1 = fx.counter();
  assert.ok(t1 - t0 >= 3n, `the 20 ms timer ticked ${t1 - t0} times in 300 ms`);
  assert.ok([...fx.log().slice(logAtRestore).matchAll(/^EVENTFD READY$/gm)].length <= 1, 'an edge-triggered eventfd reports at most once');

  const { status, log } = await fx.terminate();
  assert.match(log, /^PASS$/m, log);
  assert.doesNotMatch(log, /FAIL/, log);
  assert.deepEqual(status, { kind: 'exited', pid: fx.pid, code: 0 });
});
