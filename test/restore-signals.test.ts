// Signal state through dump → restore: a SA_SIGINFO|SA_RESTART|SA_ONSTACK
// handler with its mask, an ignored signal, the blocked mask, pending signals
// (process-wide SIGUSR2, SIGRTMIN queued twice with two values, a per-thread
// SIGRTMIN+1 with its value), the alternate stack and a periodic ITIMER_REAL.
// After the restore each pending signal is delivered exactly once, with its
// siginfo, when unblocked. (POSIX timers are not supported yet.)
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  Fixture, initHarness, runStasis, describeCli, tmpDir, restoreDetached, waitFor, procStatus, reapZombies,
} from './harness';
import { tryKill, abi } from '../src/sys';

const SIGALRM_BIT = 1n << 13n; // SIGALRM (14) in the /proc/PID/status masks
const SI_USER = 0;

let root: string;
const cleanup: Fixture[] = [];
/** The order the handlers ran in when the pending signals were unblocked, in a run never dumped. */
let baselineOrder: string;

before(() => {
  initHarness();
  root = tmpDir('rsignals');
});

after(async () => {
  for (const f of cleanup) await f.kill();
  fs.rmSync(root, { recursive: true, force: true });
});

async function start(): Promise<Fixture> {
  const fx = await Fixture.start('sigstate');
  cleanup.push(fx);
  return fx;
}

interface SigStatus { SigPnd: bigint; ShdPnd: bigint; SigBlk: bigint; SigIgn: bigint; SigCgt: bigint }

/**
 * The signal lines of /proc/PID/status, taken when no SIGALRM is in flight.
 * (Not SigQ: that counts the signals queued for the whole user.)
 */
async function sigStatus(pid: number): Promise<SigStatus> {
  return waitFor(`signal status of ${pid} without a SIGALRM pending`, () => {
    const st = procStatus(pid);
    const mask = (k: string) => BigInt('0x' + st.get(k));
    const s: SigStatus = {
      SigPnd: mask('SigPnd'), ShdPnd: mask('ShdPnd'),
      SigBlk: mask('SigBlk'), SigIgn: mask('SigIgn'), SigCgt: mask('SigCgt'),
    };
    return (s.ShdPnd & SIGALRM_BIT) === 0n && (s.SigPnd & SIGALRM_BIT) === 0n ? s : undefined;
  }, 3000, 1);
}

function bit(sig: number): bigint {
  return 1n << BigInt(sig - 1);
}

/** SIGUSR1 from us: the handler ran on the altstack, with its mask, and saw our pid (SI_USER). */
async function usr1From(fx: Fixture, n: number, what: string): Promise<void> {
  tryKill(fx.pid, abi.SIG.SIGUSR1);
  const m = await fx.waitLog(new RegExp(`^USR1 ${n} (-?\\d+) (\\d+) (-?\\d+) (\\d) (\\d)$`, 'm'), 5000);
  assert.deepEqual(
    { code: Number(m[1]), pid: Number(m[2]), onstack: m[4], maskok: m[5] },
    { code: SI_USER, pid: process.pid, onstack: '1', maskok: '1' },
    `${what}: SIGUSR1 handler siginfo / altstack / mask`,
  );
}

test('baseline: the fixture, never dumped, passes and tells the delivery order', async () => {
  const fx = await start();
  await fx.waitCounter(2n); // a SIGALRM or two
  const { status, log } = await fx.terminate();
  assert.match(log, /^PASS$/m, log);
  assert.match(log, /^ITIMER ok$/m, log);
  assert.equal(status.kind, 'exited');
  baselineOrder = /^ORDER (.*)$/m.exec(log)![1];
});

/** Start the fixture, let SIGALRMs come, dump it (killed), restore it. */
async function dumpRestore(name: string, beforeDump: (fx: Fixture) => Promise<void> = async () => undefined): Promise<Fixture> {
  const fx = await start();
  await fx.waitCounter(5n); // a few SIGALRMs
  await beforeDump(fx);
  const dir = path.join(root, name);
  const r = runStasis(['dump', '-t', String(fx.pid), '-D', dir]);
  assert.equal(r.status, 0, describeCli(r));
  await fx.reap();
  assert.deepEqual(reapZombies(), []);
  const { pid } = restoreDetached(dir);
  fx.restored();
  assert.equal(pid, fx.pid);
  return fx;
}

test('dump → restore: dispositions, mask, pending signals with their values and altstack intact', async () => {
  assert.ok(baselineOrder, 'the baseline ran');
  const SIGRTMIN = 34;
  let st0: SigStatus | undefined;
  const fx = await dumpRestore('images', async (f) => {
    await usr1From(f, 1, 'before the dump');
    st0 = await sigStatus(f.pid);
    // The fixture's state is what it claims (so the comparison below means something).
    assert.equal(st0.ShdPnd, bit(abi.SIG.SIGUSR2) | bit(SIGRTMIN), 'process-wide pending: SIGUSR2, SIGRTMIN');
    assert.equal(st0.SigPnd, bit(SIGRTMIN + 1), 'thread pending: SIGRTMIN+1');
    assert.equal(st0.SigBlk, bit(abi.SIG.SIGUSR2) | bit(SIGRTMIN) | bit(SIGRTMIN + 1));
    assert.ok(st0.SigIgn & bit(abi.SIG.SIGHUP), 'SIGHUP ignored');
  });
  assert.deepEqual(await sigStatus(fx.pid), st0, '/proc/PID/status: pending (per thread and shared), blocked, ignored, caught');
  await usr1From(fx, 2, 'after the restore');
  assert.deepEqual(await sigStatus(fx.pid), st0, 'SIGUSR1 delivery left the pending signals alone');

  const { status, log } = await fx.terminate();
  assert.match(log, /^PASS$/m, log);
  assert.match(log, /^DELIVERED usr2 1 rt 2 111 222 rt1 1 333$/m, 'each pending signal exactly once, with its value');
  assert.equal(/^ORDER (.*)$/m.exec(log)?.[1], baselineOrder, 'handlers ran in the same order as in a run never dumped');
  assert.deepEqual(status, { kind: 'exited', pid: fx.pid, code: 0 });
});

// The process is frozen for longer than a tick: at the dump its SIGALRM is
// pending and the timer reads 0 left (the kernel re-arms it on dequeue); it
// must be armed again with its interval.
test('dump → restore: the periodic ITIMER_REAL keeps ticking', async () => {
  const fx = await dumpRestore('itimer');
  try {
    await fx.assertCounting(); // SIGALRMs keep coming
    await fx.waitCounter(fx.counter() + 5n, 2000);
    const { log } = await fx.terminate();
    assert.match(log, /^PASS$/m, log);
    assert.match(log, /^ITIMER ok$/m, log);
  } finally {
    await fx.kill();
  }
});
