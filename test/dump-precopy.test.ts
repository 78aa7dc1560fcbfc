// The final dump's own copy round (dump --pre-copy, dump/precopy.ts): a dump
// made on a tracked pre-dump first copies what was written since while the tree runs, into
// DIR/stasis-precopy.*, then dumps on that round, copying frozen only what
// changed during it. The predump fixture rewrites pages between its steps and
// checks every byte after the restore (PASS/FAIL).
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Fixture, initHarness, runStasis, describeCli, tmpDir } from './harness';
import { startPredump, step, ok, pageCounts, restoreAndCheck, PREDUMP_MIB } from './predump-helpers';
import { PRECOPY_PREFIX } from '../src/dump/precopy';

const TOTAL = PREDUMP_MIB * 256;

let root: string;
const started: Fixture[] = [];

before(() => {
  initHarness();
  root = tmpDir('precopy');
});

after(async () => {
  for (const fx of started) await fx.kill();
  fs.rmSync(root, { recursive: true, force: true });
});

const start = () => startPredump(started);

function rounds(dir: string): string[] {
  return fs.readdirSync(dir).filter((f) => f.startsWith(PRECOPY_PREFIX));
}

test('a dump on a pre-dump copies the changes in a round while running, then only what the round missed; the chain restores exactly', async () => {
  const fx = await start();
  const d1 = path.join(root, 'one-1'), d2 = path.join(root, 'one-2');
  ok(runStasis(['pre-dump', '-t', String(fx.pid), '-D', d1]), 'pre-dump');
  await step(fx); // every 10th page rewritten, 8 dropped, 4 new
  const r = ok(runStasis(['dump', '-t', String(fx.pid), '-D', d2, '--prev-images-dir', '../one-1', '--pre-copy', '--json']), 'dump');
  await fx.reap();
  const res = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { frozenMs: number; timings: Record<string, number> };
  assert.ok(res.timings['pre-copy'] > 0 && res.timings['pre-copy.memory'] >= 0, `the round is a step: ${JSON.stringify(res.timings)}`);
  const [round] = rounds(d2);
  assert.equal(rounds(d2).length, 1);
  assert.equal(fs.readlinkSync(path.join(d2, 'parent')), round, 'the dump\'s parent is its round');
  assert.equal(fs.readlinkSync(path.join(d2, round, 'parent')), path.join('..', '..', 'one-1'), 'the round\'s parent is the pre-dump given, relative');
  const inRound = pageCounts(path.join(d2, round), fx.pid), final = pageCounts(d2, fx.pid);
  assert.ok(inRound.copied >= TOTAL / 10, `the round copied the ${TOTAL / 10} rewritten pages (${inRound.copied})`);
  // Frozen, only what was written during the round: the fixture's counter, stack and model pages.
  assert.ok(final.copied < TOTAL / 50, `the frozen pass copied ${final.copied} pages`);
  assert.ok(final.inParent > TOTAL / 2);
  ok(runStasis(['check-images', d2]), 'check-images of the chain');
  await restoreAndCheck(fx, d2);
});

test('a failed round or a failed dump after it leaves the task running and no round behind; a later dump replaces the last round', async () => {
  const fx = await start();
  const d1 = path.join(root, 'fail-1'), d2 = path.join(root, 'fail-2');
  ok(runStasis(['pre-dump', '-t', String(fx.pid), '-D', d1]), 'pre-dump');
  await step(fx);
  for (const failAt of ['pre-copy:memory', 'pre-copy:commit', 'memory', 'commit']) {
    const f = runStasis(['dump', '-t', String(fx.pid), '-D', d2, '--prev-images-dir', '../fail-1', '--pre-copy'], { STASIS_FAIL_AT: failAt });
    assert.equal(f.status, 1, `${failAt}: ${describeCli(f)}`);
    assert.ok(fx.alive, `${failAt}: the task runs on`);
    assert.deepEqual(rounds(d2), [], `${failAt}: no round left`);
    assert.ok(!fs.existsSync(path.join(d2, 'inventory.img')), `${failAt}: no checkpoint`);
  }
  // -R --track-mem: the task goes on, tracked from this dump's round.
  ok(runStasis(['dump', '-t', String(fx.pid), '-D', d2, '--prev-images-dir', '../fail-1', '--pre-copy', '-R', '--track-mem']), 'dump -R --track-mem');
  const first = rounds(d2);
  assert.equal(first.length, 1);
  await step(fx); // region B replaced at the same address, region D moved
  const d3 = path.join(root, 'fail-3');
  ok(runStasis(['dump', '-t', String(fx.pid), '-D', d3, '--prev-images-dir', '../fail-2', '--pre-copy']), 'dump on the -R dump');
  await fx.reap();
  assert.equal(rounds(d3).length, 1);
  await restoreAndCheck(fx, d3);
  // A dump into a directory that holds a round replaces it (the task is another one: its round copies everything).
  const fx2 = await start();
  ok(runStasis(['pre-dump', '-t', String(fx2.pid), '-D', path.join(root, 'again-1')]), 'pre-dump');
  ok(runStasis(['dump', '-t', String(fx2.pid), '-D', d2, '--prev-images-dir', '../again-1', '--pre-copy']), 'dump into d2 again');
  await fx2.reap();
  const now = rounds(d2);
  assert.equal(now.length, 1);
  assert.notEqual(now[0], first[0], 'the old round is gone');
  await restoreAndCheck(fx2, d2);
});

test('without --pre-copy: one frozen pass on the pre-dump, no round', async () => {
  const fx = await start();
  const d1 = path.join(root, 'single-1'), d2 = path.join(root, 'single-2');
  ok(runStasis(['pre-dump', '-t', String(fx.pid), '-D', d1]), 'pre-dump');
  await step(fx);
  ok(runStasis(['dump', '-t', String(fx.pid), '-D', d2, '--prev-images-dir', '../single-1']), 'dump');
  await fx.reap();
  assert.deepEqual(rounds(d2), []);
  assert.equal(fs.readlinkSync(path.join(d2, 'parent')), '../single-1');
  assert.ok(pageCounts(d2, fx.pid).copied >= TOTAL / 10, 'the rewritten pages copied frozen');
  await restoreAndCheck(fx, d2);
});
