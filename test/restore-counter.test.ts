// Restore of a single process: dump (which kills it) → restore → it runs
// again under its old pid (with its resource limits) and carries on counting
// from the dumped value, not from 0; `restore` without -d waits for it as its parent and exits with its
// status; the same images restore any number of times.
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import {
  Fixture, initHarness, runStasis, describeCli, tmpDir, loadDumpedMemory, dumpedBytes, restoreDetached, procState,
  statFields, tracerPid, waitFor, reapZombies, childrenOf, STASIS,
} from './harness';
import { tryKill, abi } from '../src/sys';

const TICK_EVERY = 20n; // as in fixtures/counter.c

let fx: Fixture;
let root: string;
let dir: string;
/** The counter in the image, and the log as it was at the dump. */
let dumped: bigint;
let dumpLog: string;

before(async () => {
  initHarness();
  root = tmpDir('rcounter');
  dir = path.join(root, 'images');
  fx = await Fixture.start('counter');
});

after(async () => {
  await fx?.kill();
  fs.rmSync(root, { recursive: true, force: true });
});

/** TICK lines of a piece of the log: [pid, count]. */
function ticks(text: string): [number, bigint][] {
  return [...text.matchAll(/^TICK (\d+) (\d+)$/gm)].map((m) => [Number(m[1]), BigInt(m[2])]);
}

/**
 * Put the log back as it was at the dump: a restored task writes on from the
 * dumped offset, and a log that changed size would (rightly) be refused.
 */
function resetLog(): void {
  fs.writeFileSync(fx.logPath, dumpLog);
}

/** The first TICK written by the restored task continues the dumped count. */
async function assertContinues(what: string): Promise<void> {
  const m = await waitFor(`${what}: a TICK after the restore`, () => ticks(fx.log().slice(dumpLog.length))[0], 5000, 5);
  const [pid, first] = m;
  assert.equal(pid, fx.pid, `${what}: the restored task logs its old pid`);
  const lastBefore = ticks(dumpLog).at(-1)?.[1] ?? 0n;
  assert.ok(first > lastBefore, `${what}: first tick ${first} after the last one before the dump (${lastBefore})`);
  assert.ok(first >= dumped && first <= dumped + TICK_EVERY,
    `${what}: first tick ${first} is the next one after the dumped counter ${dumped} (not counted from 0)`);
}

test('dump kills the counter; restore -d brings it back under its pid, counting on from the dumped value', async () => {
  await fx.waitCounter(300n);
  // Resource limits of its own (only lowered: root here lacks CAP_SYS_RESOURCE).
  const pl = spawnSync('prlimit', ['--pid', String(fx.pid), '--nofile=200:4096', '--core=1000000:unlimited',
    '--stack=4194304:16777216', '--cpu=100000:200000', '--as=8000000000:unlimited', '--memlock=65536:131072'], { encoding: 'utf8' });
  assert.equal(pl.status, 0, `prlimit (util-linux): ${pl.error?.message ?? pl.stderr}`);
  const limits = fs.readFileSync(`/proc/${fx.pid}/limits`, 'utf8');
  assert.match(limits, /^Max open files\s+200\s+4096\s/m);
  const r = runStasis(['dump', '-t', String(fx.pid), '-D', dir]);
  assert.equal(r.status, 0, describeCli(r));
  const st = await fx.reap();
  assert.equal(st.kind, 'signaled', 'killed by the dump');
  assert.ok(!fs.existsSync(`/proc/${fx.pid}`), 'the pid is free');
  dumpLog = fx.log();
  dumped = dumpedBytes(loadDumpedMemory(dir, fx.pid), fx.addr('COUNTER'), 8).readBigUInt64LE(0);
  assert.ok(dumped >= 300n, `dumped counter ${dumped}`);

  const { pid, r: rr } = restoreDetached(dir);
  fx.restored();
  assert.equal(pid, fx.pid, 'restored under its old pid');
  assert.match(rr.stderr, new RegExp(`^restored pid ${fx.pid}\\b`, 'm'));
  assert.equal(rr.stdout, '');
  // stasis has exited: the restored task is ours (the subreaper's) now.
  assert.equal(Number(statFields(fx.pid)[1]), process.pid, 'parent: the subreaper (stasis was its parent)');
  assert.equal(tracerPid(fx.pid), 0, 'not traced');
  assert.match(procState(fx.pid), /^[RS]$/, 'running');
  assert.equal(fs.readFileSync(`/proc/${fx.pid}/comm`, 'utf8').trim(), 'counter');
  assert.equal(fs.readFileSync(`/proc/${fx.pid}/limits`, 'utf8'), limits, 'the same resource limits');
  assert.doesNotMatch(rr.stderr, /warning/, 'no limit it could not restore');
  const c = fx.counter();
  assert.ok(c >= dumped, `counter ${c} went on from the dumped ${dumped}`);
  await assertContinues('restore -d');
  await fx.assertCounting();

  const { status, log } = await fx.terminate();
  assert.match(log, /^PASS$/m, log);
  assert.doesNotMatch(log, /FAIL/, log);
  assert.match(log, new RegExp(`^END ${fx.pid} \\d+$`, 'm'));
  assert.deepEqual(status, { kind: 'exited', pid: fx.pid, code: 0 });
});

test('the same images restore again and again, each time from the dumped state', async () => {
  for (let i = 0; i < 3; i++) {
    resetLog();
    const { pid } = restoreDetached(dir);
    fx.restored();
    assert.equal(pid, fx.pid);
    await assertContinues(`restore #${i + 2}`);
    // Let it get well past the dump, so that the next restore starting at
    // the dumped value again shows it comes from the images.
    await fx.waitCounter(dumped + 150n);
    tryKill(fx.pid, abi.SIG.SIGKILL);
    const st = await fx.reap();
    assert.equal(st.kind, 'signaled');
  }
  assert.deepEqual(reapZombies(), [], 'nothing else was left to reap');
});

/** `stasis restore -D dir` (no -d) as Node's child; the restored task is stasis' child. */
function restoreAttached(): { done: Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }>; stasisPid: number; stderr: () => string; exited: () => boolean } {
  const env = { ...process.env };
  delete env.STASIS_FAIL_AT;
  const child = spawn(process.execPath, [STASIS, 'restore', '-D', dir], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
  child.stdout.resume();
  let exited = false;
  const done = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => { exited = true; resolve({ code, signal, stderr }); });
  });
  return { done, stasisPid: child.pid!, stderr: () => stderr, exited: () => exited };
}

for (const [how, sig, want] of [
  ['SIGTERM (exit 0 after PASS)', abi.SIG.SIGTERM, 0],
  ['SIGUSR1 (exit 3)', abi.SIG.SIGUSR1, 3],
  ['SIGKILL (128 + 9)', abi.SIG.SIGKILL, 137],
] as const) {
  test(`restore without -d waits as the parent and exits with the task's status: ${how}`, async () => {
    resetLog();
    const s = restoreAttached();
    try {
      await waitFor('restored pid on stasis stderr', () => {
        if (/^restored pid \d+/m.test(s.stderr())) return true;
        if (s.exited()) throw new Error(`stasis restore exited first: ${s.stderr()}`);
        return false;
      }, 30000, 10);
      assert.match(s.stderr(), new RegExp(`^restored pid ${fx.pid}\\b`, 'm'));
      assert.equal(Number(statFields(fx.pid)[1]), s.stasisPid, 'the restored task is stasis\' child');
      assert.ok(!childrenOf().includes(fx.pid), 'and not ours');
      await assertContinues(`restore (attached), then ${how}`);
      tryKill(fx.pid, sig);
      const end = await s.done;
      assert.equal(end.signal, null, end.stderr);
      assert.equal(end.code, want, `stasis exit status; stderr: ${end.stderr}`);
      // stasis reaped it: no zombie anywhere.
      assert.ok(!fs.existsSync(`/proc/${fx.pid}`), 'the task is gone (reaped by stasis)');
      if (sig === abi.SIG.SIGTERM) assert.match(fx.log().slice(dumpLog.length), /^PASS$/m, fx.log());
      if (sig === abi.SIG.SIGUSR1) assert.match(fx.log().slice(dumpLog.length), new RegExp(`^USR1 ${fx.pid} \\d+$`, 'm'));
    } finally {
      tryKill(fx.pid, abi.SIG.SIGKILL);
      await s.done;
    }
  });
}
