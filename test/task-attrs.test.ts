// Per-thread CPU affinity, timer slack and I/O priority come back exactly:
// the leader pinned to CPU 0 (slack 123456 ns, best-effort 5), its second
// thread to CPU 1 (slack 234567 ns, idle class), in the images' extension
// fields and live after the restore; each thread checks its own (PASS). A
// mask naming a CPU this machine lacks is refused before anything is created.
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Fixture, initHarness, tmpDir, runStasis, describeCli, descendantsOf, rewriteImage } from './harness';
import { dumpKillRestore } from './net-helpers';
import { readImage, parts } from '../src/images/image';
import { ioprioGet } from '../src/sys';

const BE5 = (2 << 13) | 5;
const IDLE0 = 3 << 13;
const WANT = {
  leader: { cpus: '0', mask: [1n], slack: 123456n, ioprio: BE5 },
  worker: { cpus: '1', mask: [2n], slack: 234567n, ioprio: IDLE0 },
} as const;
type Role = keyof typeof WANT;

let root: string;
before(() => { initHarness(); root = tmpDir('taskattrs'); });
after(() => fs.rmSync(root, { recursive: true, force: true }));

const cpusOf = (pid: number, tid: number) => /^Cpus_allowed_list:\s*(\S+)$/m.exec(fs.readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8'))![1];

function assertLive(pid: number, tids: Map<Role, number>, when: string): void {
  for (const [role, tid] of tids) {
    assert.equal(cpusOf(pid, tid), WANT[role].cpus, `${when}: ${role} ${tid} CPU affinity`);
    assert.equal(ioprioGet(tid), WANT[role].ioprio, `${when}: ${role} ${tid} I/O priority`);
  }
  assert.equal(fs.readFileSync(`/proc/${pid}/timerslack_ns`, 'utf8').trim(), String(WANT.leader.slack), `${when}: leader's timer slack`);
}

const images = () => path.join(root, 'images');

/** The worker's mask with CPU 100 added: refused at validation, naming the thread, nothing created. */
function refusedOffline(pid: number, worker: number): void {
  const d = path.join(root, 'bad');
  fs.cpSync(images(), d, { recursive: true });
  const file = `core-${worker}.img`;
  const core = readImage(d, file, 'CORE', 'core_entry')[0];
  core.thread_core!.cpu_affinity = [2n, 1n << 36n]; // CPUs 1 and 100
  rewriteImage(d, file, 'CORE', parts('core_entry', [core]));
  const r = runStasis(['restore', '-D', d, '-d', '--no-verify']);
  assert.notEqual(r.status, 0, describeCli(r));
  assert.match(r.stderr, new RegExp(`^stasis: cannot restore the CPU affinity 1,100 of thread ${worker} of pid ${pid}: CPU 100 not online here`, 'm'), describeCli(r));
  assert.deepEqual(descendantsOf(), [], 'nothing created');
  assert.equal(fs.existsSync(`/proc/${pid}`), false, `no process ${pid}`);
}

test('affinity, timer slack and I/O priority of each thread survive a dump and restore', async () => {
  const online = fs.readFileSync('/sys/devices/system/cpu/online', 'utf8').trim();
  assert.notEqual(online, '0', 'this test needs 2 online CPUs (one thread pinned to CPU 0, the other to CPU 1); this machine has only CPU 0');
  const fx = await Fixture.start('taskattrs', { pthread: true });
  try {
    const tids = new Map([...fx.log().matchAll(/^THREAD (\w+) (\d+)$/gm)].map((m) => [m[1] as Role, Number(m[2])]));
    assert.deepEqual([...tids.keys()].sort(), ['leader', 'worker']);
    assertLive(fx.pid, tids, 'before the dump');
    await dumpKillRestore(fx, images(), {
      between: () => {
        for (const [role, tid] of tids) {
          const tc = readImage(images(), `core-${tid}.img`, 'CORE', 'core_entry')[0].thread_core!;
          const w = WANT[role];
          assert.deepEqual({ aff: tc.cpu_affinity, slack: tc.timer_slack_ns, io: tc.ioprio }, { aff: w.mask, slack: w.slack, io: w.ioprio }, `core-${tid}.img (${role})`);
        }
        refusedOffline(fx.pid, tids.get('worker')!);
      },
    });
    assertLive(fx.pid, tids, 'after the restore');
    const { log, status } = await fx.terminate();
    assert.match(log, /^PASS$/m, log);
    assert.deepEqual(status, { kind: 'exited', pid: fx.pid, code: 0 });
  } finally {
    await fx.kill();
  }
});

// Images without these fields (an older stasis's, criu's: fields 100–102 are
// ours) restore: the threads keep what they inherit, as criu leaves them.
test('images without affinity, timer slack and I/O priority restore', async () => {
  const fx = await Fixture.start('counter');
  try {
    const d = path.join(root, 'without');
    await dumpKillRestore(fx, d, {
      between: () => {
        for (const f of fs.readdirSync(d).filter((n) => /^core-\d+\.img$/.test(n))) {
          const core = readImage(d, f, 'CORE', 'core_entry')[0];
          assert.ok(core.thread_core?.cpu_affinity?.length, `${f}: written by this stasis`);
          delete core.thread_core!.cpu_affinity;
          delete core.thread_core!.timer_slack_ns;
          delete core.thread_core!.ioprio;
          rewriteImage(d, f, 'CORE', parts('core_entry', [core]));
        }
      },
      restoreArgs: ['--no-verify'],
    });
    const { log } = await fx.terminate();
    assert.match(log, /^PASS$/m, log);
  } finally {
    await fx.kill();
  }
});
