// A killed dumper never harms its target. First at chosen moments of a
// parasite session (a tracer that SIGKILLs itself there: harness/parasite-dier),
// then at random moments of whole `stasis dump` runs, single- and
// multi-threaded, with and without -R (bench/kill-dumper.ts runs 1,000 of
// those). Each time the target must be alive, untraced, running, with the same
// threads, signal masks and mappings, and pass its self-check at the end.
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { Fixture, initHarness, tmpDir } from './harness';
import { targetState, harmTo, killCampaign } from './harness/kill';
import { DIE_AT, type DieAt } from './harness/parasite-dier';

const DIER = path.join(__dirname, 'harness', 'parasite-dier.js');
let root: string;

before(() => {
  initHarness();
  root = tmpDir('kill');
});

after(() => {
  fs.rmSync(root, { recursive: true, force: true });
});

async function dieAt(fx: Fixture, where: DieAt): Promise<void> {
  const before = targetState(fx.pid);
  const r = spawnSync(process.execPath, [DIER, '--die-at', where, String(fx.pid)], { encoding: 'utf8', timeout: 60000 });
  assert.equal(r.signal, 'SIGKILL', `${where}: the tracer died there (status ${r.status}, stderr ${r.stderr})`);
  assert.equal(r.stdout.trim(), `AT ${where}`);
  assert.equal(await harmTo(fx, before), null, `${where}: target unharmed`);
}

async function assertPasses(fx: Fixture): Promise<void> {
  await fx.waitCounter(fx.counter() + 3n, 10000);
  const { status, log } = await fx.terminate();
  assert.match(log, /^PASS$/m, log);
  assert.deepEqual(status, { kind: 'exited', pid: fx.pid, code: 0 });
}

test('tracer killed at each moment of a session: the victim restores itself (mask, registers, no scratch page, sleeps unbroken)', async () => {
  const fx = await Fixture.start('victim');
  try {
    for (const where of DIE_AT.filter((w) => w !== 'thread')) await dieAt(fx, where);
    await assertPasses(fx);
  } finally {
    await fx.kill();
  }
});

test('tracer killed while a second thread runs calls: every thread restores itself', async () => {
  const fx = await Fixture.start('threads', { pthread: true });
  try {
    for (const where of ['thread', 'calls', 'call-entry', 'cure-regs'] as const) await dieAt(fx, where);
    await assertPasses(fx);
  } finally {
    await fx.kill();
  }
});

const SEED = Number(process.env.STASIS_KILL_SEED ?? Math.floor(Math.random() * 2 ** 31));
for (const [i, k] of ([['victim', true], ['victim', false], ['threads', true], ['threads', false]] as const).entries()) {
  test(`stasis dump${k[1] ? ' -R' : ''} of ${k[0]} SIGKILLed at 10 random moments: no target harmed (seed ${SEED + i})`, async () => {
    const r = await killCampaign({ fixture: k[0], leaveRunning: k[1], kills: 10, seed: SEED + i, dir: path.join(root, `${k[0]}-${k[1]}`) });
    assert.deepEqual(r.harmed, []);
    assert.equal(r.kills, 10);
    assert.ok(r.completed < r.kills, `some kills landed during the dump (${r.completed} of ${r.kills} after it)`);
    assert.ok(r.passed >= 1, 'the last target passed its self-check');
  });
}
