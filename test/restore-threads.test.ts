// Multi-threaded restore: four workers caught spinning, in nanosleep, in
// pthread_cond_wait and in read() on an internal pipe come back with their
// TIDs and thread-local values, go back to where they were, and all make
// progress and finish correctly.
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  Fixture, initHarness, runStasis, describeCli, tmpDir, restoreDetached, waitFor, reapZombies, tracerPid, descendantsOf,
  cmdline, waitGone,
} from './harness';
import { tryKill, abi } from '../src/sys';

const ROLES = ['spin', 'sleep', 'cond', 'read'] as const;
type Role = typeof ROLES[number];

interface ThreadLine { role: Role; tid: number; tlsValue: bigint; tlsAddr: bigint }
interface Report { gen: number; role: Role; tid: number; tlsValue: bigint; tlsAddr: bigint; count: bigint }

/** Syscall each worker is in when it is not running (/proc/PID/task/TID/syscall). */
const BLOCKED_IN: Partial<Record<Role, number>> = { sleep: 230 /* clock_nanosleep */, cond: 202 /* futex */, read: 0 /* read */ };

let fx: Fixture;
let root: string;
let threads: ThreadLine[];
let gen = 0;
let dir: string;
/** The log and the report generation at the dump. */
let dumpLog: string;
let dumpGen: number;

before(async () => {
  initHarness();
  root = tmpDir('rthreads');
  fx = await Fixture.start('waiters', { pthread: true, extraFds: true });
  threads = [...fx.log().matchAll(/^THREAD (\w+) (\d+) (0x[0-9a-f]+) (0x[0-9a-f]+)$/gm)]
    .map((m) => ({ role: m[1] as Role, tid: Number(m[2]), tlsValue: BigInt(m[3]), tlsAddr: BigInt(m[4]) }));
});

after(async () => {
  await fx?.kill();
  fs.rmSync(root, { recursive: true, force: true });
});

function reports(g: number): Report[] {
  return [...fx.log().matchAll(/^REPORT (\d+) (\w+) (\d+) (0x[0-9a-f]+) (0x[0-9a-f]+) (\d+)$/gm)]
    .map((m) => ({ gen: Number(m[1]), role: m[2] as Role, tid: Number(m[3]), tlsValue: BigInt(m[4]), tlsAddr: BigInt(m[5]), count: BigInt(m[6]) }))
    .filter((r) => r.gen === g);
}

/** SIGUSR1: a new generation; every worker reports once, with its own tid and TLS. */
async function roundOfReports(what: string): Promise<Map<Role, Report>> {
  gen++;
  tryKill(fx.pid, abi.SIG.SIGUSR1);
  const rs = await waitFor(`${what}: 4 reports of generation ${gen}`, () => {
    const r = reports(gen);
    return r.length >= 4 ? r : undefined;
  }, 5000, 5);
  assert.equal(rs.length, 4, `${what}: one report per worker`);
  const byRole = new Map(rs.map((r) => [r.role, r]));
  for (const t of threads) {
    const r = byRole.get(t.role);
    assert.ok(r, `${what}: ${t.role} reported`);
    assert.equal(r.tid, t.tid, `${what}: ${t.role} has its TID`);
    assert.equal(r.tlsValue, t.tlsValue, `${what}: ${t.role} has its thread-local value`);
    assert.equal(r.tlsAddr, t.tlsAddr, `${what}: ${t.role}'s thread-local variable at the same address`);
  }
  return byRole;
}

function taskSyscall(tid: number): string {
  return fs.readFileSync(`/proc/${fx.pid}/task/${tid}/syscall`, 'utf8').trim();
}

/** Each blocking worker sits in its syscall; the spinner is running in user space. */
async function assertWhereTheyWait(what: string): Promise<void> {
  for (const t of threads) {
    const nr = BLOCKED_IN[t.role];
    if (nr === undefined) continue;
    await waitFor(`${what}: ${t.role} (${t.tid}) in syscall ${nr}`, () => taskSyscall(t.tid).split(' ')[0] === String(nr), 3000, 5);
  }
  const spin = threads.find((t) => t.role === 'spin')!;
  await waitFor(`${what}: spin running`, () => taskSyscall(spin.tid) === 'running' || /^-1 /.test(taskSyscall(spin.tid)), 3000, 5);
}

function tasks(): number[] {
  return fs.readdirSync(`/proc/${fx.pid}/task`).map(Number).sort((a, b) => a - b);
}

test('the fixture has its four workers in their states', async () => {
  assert.deepEqual(threads.map((t) => t.role), [...ROLES]);
  assert.equal(new Set(threads.map((t) => t.tid)).size, 4);
  assert.deepEqual(tasks(), [fx.pid, ...threads.map((t) => t.tid)].sort((a, b) => a - b));
  const r = await roundOfReports('before the dump');
  assert.equal(r.get('cond')!.count, 1n);
  assert.equal(r.get('read')!.count, 1n);
  await assertWhereTheyWait('before the dump');
});

test('dump → restore: same TIDs, same TLS, every worker back where it waited and working', async () => {
  const tidsBefore = tasks();
  const before1 = await roundOfReports('just before the dump');
  await assertWhereTheyWait('at the dump');
  dir = path.join(root, 'images');
  const r = runStasis(['dump', '-t', String(fx.pid), '-D', dir]);
  assert.equal(r.status, 0, describeCli(r));
  assert.match(r.stderr, /\b5 threads\b/);
  await fx.reap();
  assert.deepEqual(reapZombies(), []);
  dumpLog = fx.log();
  dumpGen = gen;

  const { pid } = restoreDetached(dir);
  fx.restored();
  assert.equal(pid, fx.pid);
  assert.deepEqual(tasks(), tidsBefore, 'the same TIDs');
  for (const tid of tidsBefore) {
    assert.doesNotMatch(fs.readFileSync(`/proc/${fx.pid}/task/${tid}/status`, 'utf8'), /^State:\s+[tT]/m, `thread ${tid} not stopped`);
  }
  assert.equal(tracerPid(fx.pid), 0);
  await assertWhereTheyWait('after the restore');

  const a = await roundOfReports('after the restore');
  // Woken exactly once more each: nothing was lost or replayed.
  assert.equal(a.get('cond')!.count, before1.get('cond')!.count + 1n, 'cond woken once more');
  assert.equal(a.get('read')!.count, before1.get('read')!.count + 1n, 'read got exactly the new ping');
  assert.ok(a.get('spin')!.count > before1.get('spin')!.count, 'spin went on counting');
  assert.ok(a.get('sleep')!.count > before1.get('sleep')!.count, 'sleep went on counting');
  await assertWhereTheyWait('after a round of reports');

  const b = await roundOfReports('again');
  assert.equal(b.get('cond')!.count, a.get('cond')!.count + 1n);
  assert.equal(b.get('read')!.count, a.get('read')!.count + 1n);
  assert.ok(b.get('spin')!.count > a.get('spin')!.count, 'spin keeps counting');
  assert.ok(b.get('sleep')!.count > a.get('sleep')!.count, 'sleep keeps counting');
});

test('the restored workers stop and join cleanly (PASS)', async () => {
  const { status, log } = await fx.terminate();
  assert.match(log, /^PASS$/m, log);
  assert.doesNotMatch(log, /FAIL/, log);
  assert.deepEqual(status, { kind: 'exited', pid: fx.pid, code: 0 });
});

// A restore that fails once the threads exist must kill and reap all of them
// (traced by stasis: their exit must be waited for before the leader's).
test('a restore failing after the threads were created exits 1 and leaves nothing', async () => {
  assert.ok(dir, 'the dump test ran');
  fs.writeFileSync(fx.logPath, dumpLog); // as at the dump (else: "changed size")
  try {
    for (const phase of ['threads', 'itimers', 'pending-signals', 'registers', 'detach']) {
      // A short timeout: a hung stasis is SIGTERMed (its tracees die with it, EXITKILL).
      let r;
      try {
        r = runStasis(['restore', '-D', dir, '-d'], { STASIS_FAIL_AT: phase }, 10000);
      } catch (e) {
        assert.fail(`${phase}: stasis did not exit within 10 s (${(e as Error).message})`);
      }
      assert.equal(r.status, 1, `${phase}: ${describeCli(r)}`);
      assert.match(r.stderr.trim(), new RegExp(`^stasis: .*\\b${phase}\\b`));
      await waitGone([fx.pid, ...threads.map((t) => t.tid)], 3000);
      assert.deepEqual(descendantsOf().map((p) => `${p} ${cmdline(p)}`), [], `${phase}: nothing left`);
    }
  } finally {
    for (const p of descendantsOf()) tryKill(p, abi.SIG.SIGKILL);
    await waitGone(descendantsOf(), 3000).catch(() => undefined);
  }
});

test('after failed restores the images still restore and pass', async () => {
  // Back to the world of the dump: the log as it was, the reports counted from there.
  fs.writeFileSync(fx.logPath, dumpLog);
  gen = dumpGen;
  const { pid } = restoreDetached(dir);
  fx.restored();
  assert.equal(pid, fx.pid);
  await roundOfReports('restored again');
  const { status, log } = await fx.terminate();
  assert.match(log, /^PASS$/m, log);
  assert.doesNotMatch(log, /FAIL/, log);
  assert.deepEqual(status, { kind: 'exited', pid: fx.pid, code: 0 });
});

test('a stopped multi-threaded process comes back with every thread stopped, and goes on after SIGCONT', async () => {
  const w = await Fixture.start('waiters', { pthread: true, extraFds: true });
  try {
    const tids = fs.readdirSync(`/proc/${w.pid}/task`).map(Number).sort((a, b) => a - b);
    assert.equal(tids.length, 5);
    const states = () => tids.map((t) => {
      const st = fs.readFileSync(`/proc/${w.pid}/task/${t}/stat`, 'utf8');
      return st.slice(st.lastIndexOf(')') + 2, st.lastIndexOf(')') + 3);
    }).join('');
    tryKill(w.pid, abi.SIG.SIGSTOP);
    await waitFor('every thread stopped', () => states() === 'TTTTT', 3000, 5);
    const d = path.join(root, 'stopped');
    const r = runStasis(['dump', '-t', String(w.pid), '-D', d]);
    assert.equal(r.status, 0, describeCli(r));
    await w.reap();
    restoreDetached(d);
    w.restored();
    await waitFor('untraced', () => tracerPid(w.pid) === 0, 2000, 5);
    await new Promise((res) => setTimeout(res, 100)); // time for a wrongly running thread to show it
    assert.equal(states(), 'TTTTT', 'every thread restored stopped');
    tryKill(w.pid, abi.SIG.SIGCONT);
    await waitFor('running again', () => !states().includes('T'), 3000, 5);
    tryKill(w.pid, abi.SIG.SIGUSR1);
    await waitFor('4 reports after SIGCONT', () => [...w.log().matchAll(/^REPORT 1 /gm)].length === 4, 5000, 5);
    const { status, log } = await w.terminate();
    assert.match(log, /^PASS$/m, log);
    assert.deepEqual(status, { kind: 'exited', pid: w.pid, code: 0 });
  } finally {
    await w.kill();
  }
});
