// A dump that fails (or whose dumper is killed) at any step leaves the target
// exactly as it was: alive, untraced, running (or stopped, if it was), and
// with all of its memory intact.
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  Fixture, initHarness, runStasis, describeCli, tmpDir, waitFor, procState, tracerPid, sleep, DUMP_STEPS,
} from './harness';
import { tryKill, abi } from '../src/sys';
import { readImage } from '../src/images/image';

let fx: Fixture;
let root: string;
let n = 0;

before(async () => {
  initHarness();
  root = tmpDir('fail');
  // One memory fixture for every step: at the end it must still find every
  // page of every mapping as it built it.
  fx = await Fixture.start('memory');
});

after(async () => {
  await fx?.kill();
  fs.rmSync(root, { recursive: true, force: true });
});

/** Alive, detached (the kernel detaches when a tracer dies: poll), not stopped, counting. */
async function assertUndisturbed(what: string): Promise<void> {
  assert.ok(fx.alive, `${what}: target alive`);
  await waitFor(`${what}: TracerPid 0`, () => tracerPid(fx.pid) === 0, 2000, 5);
  await waitFor(`${what}: not stopped`, () => !/^[tT]$/.test(procState(fx.pid)), 2000, 5);
  await fx.assertCounting();
}

for (const step of DUMP_STEPS) {
  test(`STASIS_FAIL_AT=${step}: error names the step, target untouched`, async () => {
    const dir = path.join(root, `d${n++}`);
    // Without -R: a failed dump must not kill the target either.
    const r = runStasis(['dump', '-t', String(fx.pid), '-D', dir], { STASIS_FAIL_AT: step });
    assert.equal(r.status, 1, describeCli(r));
    assert.equal(r.signal, null);
    const lines = r.stderr.trim().split('\n');
    assert.equal(lines.length, 1, `one line on stderr: ${r.stderr}`);
    assert.match(lines[0], new RegExp(`^stasis: .*\\b${step}\\b`), 'message names the step');
    if (step !== 'inventory') {
      assert.ok(!fs.existsSync(path.join(dir, 'inventory.img')), 'an incomplete dump has no inventory.img');
    }
    await assertUndisturbed(step);
  });

  test(`STASIS_FAIL_AT=${step}:kill: dumper SIGKILLed, target untouched`, async () => {
    const dir = path.join(root, `d${n++}`);
    const r = runStasis(['dump', '-t', String(fx.pid), '-D', dir], { STASIS_FAIL_AT: `${step}:kill` });
    assert.equal(r.signal, 'SIGKILL', describeCli(r));
    if (step !== 'inventory') {
      assert.ok(!fs.existsSync(path.join(dir, 'inventory.img')), 'an incomplete dump has no inventory.img');
    }
    await assertUndisturbed(`${step}:kill`);
  });
}

test('after every failure the target passes its self-check', async () => {
  assert.equal(n, DUMP_STEPS.length * 2, 'every step was injected both ways');
  const { status, log } = await fx.terminate();
  assert.match(log, /^PASS$/m, log);
  assert.deepEqual(status, { kind: 'exited', pid: fx.pid, code: 0 });
});

test('a process stopped by SIGSTOP stays stopped after failed dumps and dump -R, and continues on SIGCONT', async () => {
  const st = await Fixture.start('memory');
  const dir = path.join(root, 'stopped');
  try {
    tryKill(st.pid, abi.SIG.SIGSTOP);
    await waitFor('State T', () => procState(st.pid) === 'T', 2000, 5);
    const c0 = st.counter();
    await sleep(50);
    assert.equal(st.counter(), c0, 'stopped: counter frozen');

    // Failed dumps (error, or dumper killed) leave it stopped too.
    for (const failAt of ['memory', 'memory:kill', 'inventory:kill']) {
      const f = runStasis(['dump', '-t', String(st.pid), '-D', `${dir}-${failAt}`], { STASIS_FAIL_AT: failAt });
      assert.ok(f.status === 1 || f.signal === 'SIGKILL', describeCli(f));
      await waitFor(`TracerPid 0 after ${failAt}`, () => tracerPid(st.pid) === 0, 2000, 5);
      await sleep(50);
      assert.equal(procState(st.pid), 'T', `still stopped after a failed dump (${failAt})`);
      assert.equal(st.counter(), c0, `counter did not move (${failAt})`);
    }

    const r = runStasis(['dump', '-t', String(st.pid), '-D', dir, '-R']);
    assert.equal(r.status, 0, describeCli(r));
    await waitFor('TracerPid 0', () => tracerPid(st.pid) === 0, 2000, 5);
    // Give a wrongly resumed process time to show it.
    await sleep(100);
    assert.equal(procState(st.pid), 'T', 'still stopped (group stop), not traced-stopped');
    assert.equal(st.counter(), c0, 'counter did not move while stopped');
    const core = readImage(dir, `core-${st.pid}.img`, 'CORE', 'core_entry')[0] as { tc: { task_state: number } };
    assert.equal(core.tc.task_state, 3, 'core records TASK_STOPPED');

    tryKill(st.pid, abi.SIG.SIGCONT);
    await waitFor('running again', () => procState(st.pid) !== 'T', 2000, 5);
    await st.assertCounting();
    const { status, log } = await st.terminate();
    assert.match(log, /^PASS$/m, log);
    assert.equal(status.kind, 'exited');
  } finally {
    await st.kill();
  }
});
