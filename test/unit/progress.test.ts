// The progress line (src/progress.ts): its text, and when it is drawn — not
// in the first second, at most every 100 ms, erased at the end — on a fake
// clock (no timing of the machine involved).
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { formatProgress, ProgressLine } from '../../src/progress';

test('the line names the phase, then pages done/total, percent and MB/s', () => {
  assert.equal(formatProgress('dump', 'freeze', 0, 0, undefined), 'stasis dump: freeze');
  assert.equal(formatProgress('dump', 'memory', 65536, 262144, 652.4e6), 'stasis dump: memory  65536/262144 pages (25%)  652 MB/s');
  assert.equal(formatProgress('restore', 'pages', 10, 0, undefined), 'stasis restore: pages  10/10 pages (100%)');
  // More done than the estimate: the total follows (never above 100%).
  assert.equal(formatProgress('pre-dump', 'memory', 300, 200, 1e6), 'stasis pre-dump: memory  300/300 pages (100%)  1 MB/s');
  assert.equal(formatProgress('dump', 'memory', 1, 3, undefined, 20), 'stasis dump: memory ');
});

function fakeLine(opts: { delayMs?: number; everyMs?: number } = {}): { line: ProgressLine; out: string[]; clock: { t: number } } {
  const clock = { t: 5000 };
  const out: string[] = [];
  const line = new ProgressLine('dump', { write: (s) => out.push(s), now: () => clock.t, ...opts });
  return { line, out, clock };
}

test('nothing is drawn in the first second; then at most once per 100 ms; end erases it', () => {
  const { line, out, clock } = fakeLine();
  line.enter('freeze');
  line.leave();
  line.enter('memory');
  line.addTotal(1000);
  for (let i = 0; i < 10; i++) { clock.t += 90; line.addDone(10); }
  assert.deepEqual(out, [], 'nothing within the first second');
  clock.t = 6000;
  line.addDone(100); // 200 pages done; pages counted from t = 5090
  assert.deepEqual(out, [`\rstasis dump: memory  200/1000 pages (20%)  ${Math.round((200 * 4096) / 0.91 / 1e6)} MB/s\x1b[K`]);
  clock.t = 6099;
  line.addDone(100);
  line.enter('memory.x');
  assert.equal(out.length, 1, 'not again within 100 ms');
  clock.t = 6100;
  line.leave();
  line.tick();
  assert.equal(out.length, 2);
  assert.match(out[1], /^\rstasis dump: memory {2}300\/1000 pages \(30%\)/);
  // Many updates in a long loop: one draw per 100 ms of the clock.
  for (let i = 0; i < 1000; i++) { clock.t += 1; line.addDone(0); }
  assert.equal(line.draws, 2 + 10);
  line.leave();
  clock.t += 100;
  line.tick();
  assert.match(out[out.length - 1], /^\rstasis dump: starting {2}300\/1000/);
  line.end();
  assert.equal(out[out.length - 1], '\r\x1b[K');
  const n = out.length;
  line.end();
  assert.equal(out.length, n, 'erased once');
});

test('a short run never draws, so its end writes nothing', () => {
  const { line, out, clock } = fakeLine();
  line.enter('memory');
  clock.t += 999;
  line.addDone(5);
  line.end();
  assert.deepEqual(out, []);
});

test('a delay of 0 draws at once', () => {
  const { line, out } = fakeLine({ delayMs: 0 });
  line.enter('freeze');
  assert.deepEqual(out, ['\rstasis dump: freeze\x1b[K']);
});
