// A real program: python3 running two threads (threading module) that count
// and append their counts to a log file survives dump → restore: same pid and
// TIDs, and each thread's count goes on from where it was.
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  Fixture, initHarness, runStasis, describeCli, tmpDir, restoreDetached, waitFor, reapZombies, tracerPid,
} from './harness';

// stdout is the harness' log (a file); the counts go to their own file,
// opened O_APPEND, one write(2) per line from either thread.
const SCRIPT = `
import os, sys, threading, time, signal

stop = threading.Event()
counts = [0, 0]
log = os.open(os.path.join(sys.argv[1], 'counts.log'), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

def out(s):
    os.write(1, (s + '\\n').encode())

def work(i):
    tid = threading.get_native_id()
    out('THREAD %d %d' % (i, tid))
    while not stop.is_set():
        counts[i] += 1
        os.write(log, ('C %d %d %d\\n' % (i, tid, counts[i])).encode())
        time.sleep(0.01)

signal.signal(signal.SIGTERM, lambda s, f: stop.set())
out('PID %d' % os.getpid())
threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
for t in threads:
    t.start()
while min(counts) == 0:
    time.sleep(0.01)
out('READY')
while not stop.is_set():
    time.sleep(0.05)
for t in threads:
    t.join()
out('END %d %d' % (counts[0], counts[1]))
out('PASS')
`;

function findPython(): string | undefined {
  const dirs = ['/usr/bin', '/usr/local/bin', ...(process.env.PATH ?? '').split(':')];
  return dirs.map((d) => path.join(d, 'python3')).find((p) => fs.existsSync(p));
}

const python = findPython();
let fx: Fixture;
let root: string;
let countsLog: string;

before(async () => {
  initHarness();
  root = tmpDir('rpython');
  if (!python) throw new Error('python3 is needed (.ci/run installs it)');
  const script = path.join(root, 'counter.py');
  fs.writeFileSync(script, SCRIPT);
  fx = await Fixture.startCommand('python', (dir) => [python, '-S', '-u', script, dir], { extraFds: true });
  countsLog = path.join(fx.dir, 'counts.log');
});

after(async () => {
  await fx?.kill();
  fs.rmSync(root, { recursive: true, force: true });
});

interface Line { thread: number; tid: number; count: number }

function lines(text: string): Line[] {
  return [...text.matchAll(/^C (\d) (\d+) (\d+)$/gm)].map((m) => ({ thread: Number(m[1]), tid: Number(m[2]), count: Number(m[3]) }));
}

function tasks(pid: number): number[] {
  return fs.readdirSync(`/proc/${pid}/task`).map(Number).sort((a, b) => a - b);
}

test('python3 with two threads survives dump → restore and keeps counting', async () => {
  // By thread index: the two threads may print in either order.
  const tids: number[] = [];
  for (const m of fx.log().matchAll(/^THREAD (\d) (\d+)$/gm)) tids[Number(m[1])] = Number(m[2]);
  assert.equal(tids.filter(Boolean).length, 2);
  const tasksBefore = tasks(fx.pid);
  assert.deepEqual(tasksBefore, [fx.pid, ...tids].sort((a, b) => a - b), 'main thread and two workers');
  await waitFor('some counting', () => lines(fs.readFileSync(countsLog, 'utf8')).length >= 20, 5000);

  const dir = path.join(root, 'images');
  const r = runStasis(['dump', '-t', String(fx.pid), '-D', dir]);
  assert.equal(r.status, 0, describeCli(r));
  assert.match(r.stderr, /\b3 threads\b/);
  await fx.reap();
  assert.deepEqual(reapZombies(), []);
  const atDump = fs.readFileSync(countsLog, 'utf8');
  assert.ok(atDump.endsWith('\n'), 'whole lines only');
  const last = [0, 1].map((i) => lines(atDump).filter((l) => l.thread === i).at(-1)!);

  const { pid } = restoreDetached(dir);
  fx.restored();
  assert.equal(pid, fx.pid);
  assert.deepEqual(tasks(fx.pid), tasksBefore, 'same TIDs');
  assert.equal(tracerPid(fx.pid), 0);

  // Each thread's next line continues its own count, then it goes on.
  const after1 = await waitFor('both threads logging after the restore', () => {
    const ls = lines(fs.readFileSync(countsLog, 'utf8').slice(atDump.length));
    return [0, 1].every((i) => ls.filter((l) => l.thread === i).length >= 5) ? ls : undefined;
  }, 5000);
  for (const i of [0, 1]) {
    const mine = after1.filter((l) => l.thread === i);
    assert.equal(mine[0].tid, tids[i], `thread ${i} logs its old TID`);
    assert.equal(mine[0].count, last[i].count + 1, `thread ${i} goes on from ${last[i].count}, not from 0`);
    mine.forEach((l, k) => assert.equal(l.count, last[i].count + 1 + k, `thread ${i}: counts one by one`));
  }

  const { status, log } = await fx.terminate();
  assert.match(log, /^PASS$/m, log);
  const end = /^END (\d+) (\d+)$/m.exec(log)!;
  const final = lines(fs.readFileSync(countsLog, 'utf8'));
  for (const i of [0, 1]) {
    assert.equal(Number(end[i + 1]), final.filter((l) => l.thread === i).at(-1)!.count, `thread ${i}: its final count is its last line`);
  }
  assert.deepEqual(status, { kind: 'exited', pid: fx.pid, code: 0 });
});
