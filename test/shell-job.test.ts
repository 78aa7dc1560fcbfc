// A shell job (-j/--shell-job): a program started from a shell runs on the
// shell's terminal. Without -j the dump is refused (one line naming the fd
// and the terminal); with -j it is dumped, a restore without -j is refused
// before anything is created, and `restore -j` gives it stasis's own terminal:
// it carries on printing there under its pid. The terminal is a pty made by
// script(1).
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { initHarness, tmpDir, buildFixture, STASIS, reapZombies, waitGone } from './harness';

let root: string;
before(() => { initHarness(); root = tmpDir('shelljob'); });
after(() => fs.rmSync(root, { recursive: true, force: true }));

test('shell job on a terminal: refused without -j, dumped and restored onto our terminal with -j', async () => {
  const bin = buildFixture('ttyjob');
  const dir = path.join(root, 'images');
  const script = path.join(root, 'job.sh');
  fs.writeFileSync(script, `#!/bin/bash
# Until process $1 has written at least $2 bytes (its ticks are ~35 bytes each).
written() { while [ -e /proc/$1 ] && ! [ "$(sed -n 's/^wchar: //p' /proc/$1/io 2>/dev/null)" -ge "$2" ] 2>/dev/null; do sleep 0.02; done; }
"${bin}" & P=$!
written $P 200
echo "STEP dump-without-j"; "${process.execPath}" "${STASIS}" dump -t $P -D "${dir}"; echo "RC $?"
echo "STEP dump-j"; "${process.execPath}" "${STASIS}" dump -j -t $P -D "${dir}"; echo "RC $?"
wait $P
echo "STEP restore-without-j"; "${process.execPath}" "${STASIS}" restore -d -D "${dir}"; echo "RC $?"
echo "STEP restore-j"; "${process.execPath}" "${STASIS}" restore -j -d -D "${dir}"; echo "RC $?"
written $P 150
echo "STEP end"
kill -TERM $P
# Until it has printed its verdict and exited (a zombie of ours counts as exited).
while [ -e /proc/$P ] && [ "$(cut -d')' -f2 /proc/$P/stat | cut -d' ' -f2)" != Z ]; do sleep 0.05; done
`, { mode: 0o755 });
  const r = spawnSync('script', ['-qec', script, '/dev/null'], { encoding: 'utf8', timeout: 60000 });
  const out = r.stdout.replace(/\r/g, '');
  assert.equal(r.status, 0, out + r.stderr);
  const pid = Number(/^PID (\d+)$/m.exec(out)?.[1]);
  assert.ok(pid > 0, out);
  const tty = new RegExp(`^tick \\d+ pid ${pid} tty (/dev/pts/\\d+)$`, 'm').exec(out)?.[1];
  assert.ok(tty, `the job printed on a terminal:\n${out}`);
  const steps = out.split(/^STEP /m);
  const step = (name: string) => steps.find((s) => s.startsWith(name)) ?? '';
  assert.match(step('dump-without-j'), new RegExp(`^stasis: fd \\d of pid ${pid} is the terminal ${tty}; dump a shell job with -j/--shell-job$`, 'm'));
  assert.match(step('dump-without-j'), /^RC 1$/m);
  assert.match(step('dump-j'), /^RC 0$/m);
  assert.match(step('restore-without-j'), /holds a shell job on a terminal.*restore with -j\/--shell-job/);
  assert.match(step('restore-without-j'), /^RC 2$/m);
  assert.match(step('restore-j'), /^RC 0$/m);
  // After the restore it goes on ticking on the same terminal, under its pid, counting on.
  const ticks = (s: string) => [...s.matchAll(new RegExp(`^tick (\\d+) pid ${pid} tty ${tty}$`, 'gm'))].map((m) => Number(m[1]));
  const before = ticks(step('dump-without-j') + step('dump-j'));
  const afterTicks = ticks(step('restore-j'));
  assert.ok(before.length > 0 && afterTicks.length >= 3, out);
  assert.ok(afterTicks[0] > before[before.length - 1], `counting on from ${before[before.length - 1]}: ${afterTicks.join(',')}`);
  assert.match(step('end'), /^PASS$/m);
  reapZombies();
  await waitGone([pid], 5000);
});
