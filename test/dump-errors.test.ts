// What cannot be dumped is refused with one clear line on stderr and a
// non-zero exit (2 for usage errors), and nothing is left half done.
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import {
  Fixture, initHarness, runStasis, describeCli, tmpDir, procState, tracerPid, waitFor, sleep, STASIS, type CliResult,
} from './harness';
import { ptrace, tryWait4, abi } from '../src/sys';

let root: string;
let n = 0;
const fixtures: Fixture[] = [];

before(() => {
  initHarness();
  root = tmpDir('errors');
});

after(async () => {
  for (const f of fixtures) await f.kill();
  fs.rmSync(root, { recursive: true, force: true });
});

function newDir(): string {
  return path.join(root, `d${n++}`);
}

/** Exit status, one line `stasis: ...` matching `re`, nothing on stdout, no image written. */
function assertRefused(r: CliResult, re: RegExp, dir: string | undefined, status = 1): void {
  assert.equal(r.status, status, describeCli(r));
  assert.equal(r.stdout, '', 'nothing on stdout');
  const lines = r.stderr.trimEnd().split('\n');
  assert.match(lines[0], /^stasis: /);
  assert.doesNotMatch(r.stderr, /internal error|^\s+at /m, 'no stack trace');
  assert.match(lines[0], re);
  if (status === 1) assert.equal(lines.length, 1, `one line: ${r.stderr}`);
  if (dir && fs.existsSync(dir)) {
    assert.deepEqual(fs.readdirSync(dir).filter((f) => f.endsWith('.img')), [], 'no image written');
  }
}

/** A pid nobody has (we never point stasis at a process we did not start). */
function freePid(): number {
  const max = Number(fs.readFileSync('/proc/sys/kernel/pid_max', 'utf8'));
  let pid = max - 1;
  while (fs.existsSync(`/proc/${pid}`)) pid--;
  return pid;
}

test('a pid that does not exist', () => {
  const pid = freePid();
  const dir = newDir();
  assertRefused(runStasis(['dump', '-t', String(pid), '-D', dir]), new RegExp(`no process with pid ${pid}\\b`), dir);
});

test('a zombie (its parent alive and not waiting)', async () => {
  const fx = await Fixture.start('zombie');
  fixtures.push(fx);
  const child = Number(fx.manifest.values.get('CHILD')?.[0]);
  assert.ok(child > 0);
  assert.equal(procState(child), 'Z', 'the child is a zombie');
  const dir = newDir();
  assertRefused(runStasis(['dump', '-t', String(child), '-D', dir]), /zombie/, dir);
  assert.equal(procState(child), 'Z', 'still a zombie, its status not taken');
  // The parent then reaps it and finds its exit status 7.
  const { status, log } = await fx.terminate();
  assert.match(log, /^PASS$/m, log);
  assert.equal(status.kind, 'exited');
});

test('a kernel thread', () => {
  const PF_KTHREAD = 0x00200000;
  const flagsOf = (pid: number) => {
    const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(s.slice(s.lastIndexOf(')') + 2).split(' ')[9 - 3]);
  };
  let kt = 2;
  if (!fs.existsSync('/proc/2') || !(flagsOf(2) & PF_KTHREAD)) {
    kt = fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d)).map(Number)
      .find((p) => { try { return (flagsOf(p) & PF_KTHREAD) !== 0; } catch { return false; } }) ?? 0;
  }
  assert.ok(kt > 0, 'a kernel thread is visible in /proc');
  const dir = newDir();
  assertRefused(runStasis(['dump', '-t', String(kt), '-D', dir]), /kernel thread/, dir);
});

test('stasis dumping itself', () => {
  const dir = newDir();
  // sh execs node in place: $$ is then stasis' own pid.
  const r = spawnSync('/bin/sh', ['-c', 'exec "$0" "$1" dump -t $$ -D "$2"', process.execPath, STASIS, dir], {
    encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 30000,
  });
  assertRefused({ status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr }, /itself/, dir);
});

test('a task already traced by another tracer', async () => {
  const fx = await Fixture.start('memory');
  fixtures.push(fx);
  // We (the test process) become its tracer; it is our child only by reparenting.
  ptrace.seize(fx.pid, 0);
  try {
    assert.equal(tracerPid(fx.pid), process.pid);
    const dir = newDir();
    assertRefused(runStasis(['dump', '-t', String(fx.pid), '-D', dir]), new RegExp(`already traced by pid ${process.pid}\\b`), dir);
    assert.equal(tracerPid(fx.pid), process.pid, 'still ours');
  } finally {
    // PTRACE_DETACH needs a stopped tracee: interrupt, wait for that stop
    // (passing on any signal that got there first), detach.
    ptrace.interrupt(fx.pid);
    await waitFor('the interrupt stop', () => {
      const ws = tryWait4(fx.pid, abi.WAIT.WNOHANG);
      if (typeof ws === 'number') throw new Error(`wait4: errno ${-ws}`);
      if (ws.kind === 'ptrace-event') return true;
      if (ws.kind === 'stopped') ptrace.cont(fx.pid, ws.signal);
      if (ws.kind === 'exited' || ws.kind === 'signaled') throw new Error(`fixture ended: ${JSON.stringify(ws)}`);
      return false;
    }, 3000, 2);
    ptrace.detach(fx.pid, 0);
  }
  assert.equal(tracerPid(fx.pid), 0);
  await sleep(10);
  assert.doesNotMatch(procState(fx.pid), /^[tT]$/);
  await fx.assertCounting();
  const { status, log } = await fx.terminate();
  assert.match(log, /^PASS$/m, log);
  assert.equal(status.kind, 'exited');
});

test('usage errors exit 2', () => {
  const dir = newDir();
  const nobody = String(freePid());
  const cases: [string[], RegExp][] = [
    [['dump', '-D', dir], /-t/],
    [['dump', '-t', 'abc', '-D', dir], /invalid pid 'abc'/],
    [['dump', '-t', '0', '-D', dir], /invalid pid '0'/],
    [['dump', '-t', '1.5', '-D', dir], /invalid pid '1.5'/],
    [['dump', '-t', nobody], /-D/],
    [['dump', '-t', nobody, '-D', dir, '--bogus'], /bogus/],
    [['frobnicate'], /unknown command 'frobnicate'/],
  ];
  for (const [args, re] of cases) {
    const r = runStasis(args);
    assertRefused(r, re, undefined, 2);
  }
  assert.ok(!fs.existsSync(dir), 'usage errors create no directory');
});

test('an images dir that cannot be created is a one-line error', () => {
  const file = path.join(root, 'a-file');
  fs.writeFileSync(file, '');
  // A live process (the test runner itself): the pid passes its checks, the directory does not,
  // and nothing is seized.
  const r = runStasis(['dump', '-t', String(process.pid), '-D', file]);
  assertRefused(r, /a-file.*not a directory/, undefined, 2);
  const r2 = runStasis(['dump', '-t', String(freePid()), '-D', path.join(root, 'never-made')]);
  assertRefused(r2, /no process/, undefined);
  assert.ok(!fs.existsSync(path.join(root, 'never-made')), 'no directory for a pid that does not exist');
});
