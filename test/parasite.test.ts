// Victim and spy: freezing a task, running remote syscalls in it and dumping
// it, again and again, must be invisible to it: its sleeps neither fail nor
// end early, its signal dispositions and mask stay as they were, and no
// SIGTRAP ever reaches it.
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  Fixture, initHarness, runStasis, describeCli, tmpDir, waitFor, procState, tracerPid, sleep,
} from './harness';
import { freezeProcess, release } from '../src/freeze';
import { withParasite, type TrapMode } from '../src/compel/parasite';
import { ptrace } from '../src/sys';

let victim: Fixture;
let root: string;
const rounds = { lib: 0, cli: 0 };

before(async () => {
  initHarness();
  root = tmpDir('parasite');
  victim = await Fixture.start('victim');
});

after(async () => {
  await victim?.kill();
  fs.rmSync(root, { recursive: true, force: true });
});

const jitter = () => sleep(20 + Math.floor(Math.random() * 180));

async function assertReleased(what: string): Promise<void> {
  await waitFor(`${what}: TracerPid 0`, () => tracerPid(victim.pid) === 0, 2000, 5);
  assert.doesNotMatch(procState(victim.pid), /^[tTZ]$/, `${what}: running`);
}

test('remote syscalls run in the victim and return its answers', async () => {
  for (let i = 0; i < 6; i++) {
    await jitter();
    const mode: TrapMode = i % 2 ? 'syscall-stop' : 'int3';
    const frozen = freezeProcess(victim.pid);
    try {
      assert.deepEqual(frozen.threads, [victim.pid]);
      assert.equal(frozen.stopped, false);
      assert.equal(tracerPid(victim.pid), process.pid, 'we are the tracer while frozen');
      const regsBefore = ptrace.getRegs(victim.pid);
      const calls = withParasite(victim.pid, (p) => {
        assert.equal(p.syscall('getpid'), BigInt(victim.pid), 'remote getpid is the victim\'s pid');
        assert.equal(p.syscall('gettid'), BigInt(victim.pid));
        assert.equal(p.syscall('getppid'), BigInt(process.pid), 'its parent is us (the subreaper)');
        // A failing call reports -errno without harming the task.
        assert.equal(p.syscallRaw(3 /* close */, 12345), -9n, 'close(12345) = -EBADF');
        return p.calls;
      }, { mode });
      assert.equal(calls, 4, `${mode}: four remote calls ran`);
      // Cured: the registers are exactly those it was stopped with.
      assert.deepEqual(ptrace.getRegs(victim.pid), regsBefore, `${mode}: registers restored`);
    } finally {
      release(frozen);
    }
    rounds.lib++;
    await assertReleased(`round ${i} (${mode})`);
  }
  assert.equal(rounds.lib, 6);
});

test('repeated dump -R of the victim', async () => {
  for (let i = 0; i < 5; i++) {
    await jitter();
    const dir = path.join(root, `d${i}`);
    const r = runStasis(['dump', '-t', String(victim.pid), '-D', dir, '-R']);
    assert.equal(r.status, 0, describeCli(r));
    assert.ok(fs.existsSync(path.join(dir, 'inventory.img')));
    rounds.cli++;
    await assertReleased(`dump ${i}`);
  }
  assert.equal(rounds.cli, 5);
});

test('the victim noticed nothing', async () => {
  assert.ok(rounds.lib > 0 && rounds.cli > 0, 'the spying above happened');
  const c = victim.counter();
  await victim.waitCounter(c + 1n, 3000); // at least one full, undisturbed sleep more
  const { status, log } = await victim.terminate();
  assert.match(log, /^PASS$/m, log);
  assert.deepEqual(status, { kind: 'exited', pid: victim.pid, code: 0 });
  const count = Number(/^COUNT (\d+)/m.exec(log)?.[1]);
  assert.ok(count >= 3, `the victim slept ${count} times`);
});
