// A multi-threaded process: every thread is frozen, gets its own core-TID.img
// with its own registers, and every thread is released (or survives a killed
// dumper) untraced and running.
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  Fixture, initHarness, runStasis, describeCli, tmpDir, crit, waitFor, parseMapsText, readMapsText, mappingOf,
} from './harness';

interface ThreadLine { tid: number; fsbase: bigint; counter: bigint }

let fx: Fixture;
let threads: ThreadLine[];
let root: string;

before(async () => {
  initHarness();
  root = tmpDir('threads');
  fx = await Fixture.start('threads', { pthread: true });
  threads = [...fx.log().matchAll(/^THREAD (\d+) (0x[0-9a-f]+) (0x[0-9a-f]+)$/gm)]
    .map((m) => ({ tid: Number(m[1]), fsbase: BigInt(m[2]), counter: BigInt(m[3]) }));
});

after(async () => {
  await fx?.kill();
  fs.rmSync(root, { recursive: true, force: true });
});

function readCounter(addr: bigint): bigint {
  const fd = fs.openSync(`/proc/${fx.pid}/mem`, 'r');
  try {
    const b = Buffer.alloc(8);
    fs.readSync(fd, b, 0, 8, Number(addr));
    return b.readBigUInt64LE(0);
  } finally {
    fs.closeSync(fd);
  }
}

/** Every thread untraced, not stopped, and each one's own counter moving. */
async function assertAllThreadsRun(what: string): Promise<void> {
  for (const t of threads) {
    const status = () => fs.readFileSync(`/proc/${fx.pid}/task/${t.tid}/status`, 'utf8');
    await waitFor(`${what}: thread ${t.tid} TracerPid 0`, () => /^TracerPid:\s+0$/m.test(status()), 2000, 5);
    assert.doesNotMatch(status(), /^State:\s+[tT]/m, `${what}: thread ${t.tid} not stopped`);
    const c0 = readCounter(t.counter);
    await waitFor(`${what}: thread ${t.tid} counting`, () => readCounter(t.counter) > c0, 3000, 5);
  }
}

test('the fixture has four threads', () => {
  assert.equal(threads.length, 4);
  assert.equal(threads[0].tid, fx.pid, 'the leader first');
  const tasks = fs.readdirSync(`/proc/${fx.pid}/task`).map(Number).sort((a, b) => a - b);
  assert.deepEqual(tasks, threads.map((t) => t.tid).sort((a, b) => a - b));
  assert.equal(new Set(threads.map((t) => t.fsbase)).size, 4, 'each thread has its own TLS');
});

test('dump -R: one core image per thread with that thread\'s registers', async () => {
  const dir = path.join(root, 'ok');
  const maps = parseMapsText(readMapsText(fx.pid));
  const r = runStasis(['dump', '-t', String(fx.pid), '-D', dir, '-R']);
  assert.equal(r.status, 0, describeCli(r));
  assert.match(r.stderr, /\b4 threads\b/);

  const ps = JSON.parse(crit(['show', path.join(dir, 'pstree.img')])).entries[0];
  assert.equal(ps.threads[0], fx.pid, 'pstree: leader first');
  assert.deepEqual([...ps.threads].sort(), threads.map((t) => t.tid).sort());

  let checked = 0;
  for (const t of threads) {
    const core = JSON.parse(crit(['show', path.join(dir, `core-${t.tid}.img`)])).entries[0];
    const regs = core.thread_info.gpregs;
    assert.equal(BigInt(regs.fs_base), t.fsbase, `thread ${t.tid}: its own fs_base`);
    const code = mappingOf(maps, BigInt(regs.ip));
    assert.equal(code?.perms.slice(0, 3), 'r-x', `thread ${t.tid}: ip in an r-x mapping`);
    assert.equal(mappingOf(maps, BigInt(regs.sp))?.perms.slice(0, 2), 'rw', `thread ${t.tid}: sp in a writable mapping`);
    assert.equal(core.thread_core.comm, 'threads');
    if (t.tid === fx.pid) assert.ok(core.tc, 'the leader carries the task core');
    checked++;
  }
  assert.equal(checked, 4);
  await assertAllThreadsRun('after dump -R');
});

test('dumping a thread id that is not the leader is refused', async () => {
  const worker = threads[2].tid;
  const dir = path.join(root, 'tid');
  // -R: should the check ever be lost, this dumps (and must not kill) the process.
  const r = runStasis(['dump', '-t', String(worker), '-D', dir, '-R']);
  assert.equal(r.status, 1, describeCli(r));
  assert.match(r.stderr.trim(), new RegExp(`^stasis: .*${worker}.* thread of process ${fx.pid}`));
  await assertAllThreadsRun('after the refused dump');
});

for (const failAt of ['parasite:kill', 'memory', 'write-core:kill']) {
  test(`STASIS_FAIL_AT=${failAt}: every thread is released`, async () => {
    const dir = path.join(root, failAt.replace(':', '-'));
    const r = runStasis(['dump', '-t', String(fx.pid), '-D', dir], { STASIS_FAIL_AT: failAt });
    assert.ok(failAt.endsWith(':kill') ? r.signal === 'SIGKILL' : r.status === 1, describeCli(r));
    await assertAllThreadsRun(failAt);
  });
}

test('the threads fixture passes its self-check', async () => {
  const { status, log } = await fx.terminate();
  assert.match(log, /^PASS$/m, log);
  assert.deepEqual(status, { kind: 'exited', pid: fx.pid, code: 0 });
});
