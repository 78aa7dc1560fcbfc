// The fd table of a small tree (fixtures/fds.c) comes back whole: regular
// files at their fd numbers (7, 10, 20, 21, 30, 42...) with their offsets,
// O_APPEND / O_NONBLOCK and FD_CLOEXEC, two dup'd fds and a parent/child pair
// sharing one offset, a pipe with unread data, /dev/null and /dev/zero, the
// cwd and umask. A file the fixture holds open that changed size between dump
// and restore makes the restore refuse (one clear line naming the file, no
// process left); --skip-file-check restores anyway.
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  Fixture, initHarness, runStasis, tmpDir, restoreDetached, waitGone, statFields, tracerPid, listFds,
  descendantsOf, cmdline,
} from './harness';
import { readImage } from '../src/images/image';
import { dumpOk, snapshotFiles, putBack, assertOneLineError, type Snapshot } from './net-helpers';

const FDS = ['0', '1', '2', '7', '10', '20', '21', '30', '42', '50', '51', '60', '61'];

let root: string;
let dir: string;
let fx: Fixture;
let child: number;
let snap: Snapshot;
/** /proc/PID/fdinfo flags and link of each fd, parent and child, before the dump. */
let tableAtDump: Map<string, string>;

before(async () => {
  initHarness();
  root = tmpDir('ffds');
  dir = path.join(root, 'images');
  fx = await Fixture.start('fds', { extraFds: true });
  child = Number(fx.manifest.values.get('CHILD')?.[0]);
});

after(async () => {
  try { process.kill(child, 'SIGKILL'); } catch { /* gone */ }
  await fx?.kill();
  await waitGone([child], 3000).catch(() => undefined);
  fs.rmSync(root, { recursive: true, force: true });
});

/** fd → "flags link" for the parent and the child (what the kernel says). */
function fdTable(): Map<string, string> {
  const m = new Map<string, string>();
  for (const pid of [fx.pid, child]) {
    for (const fd of listFds(pid)) {
      const flags = /^flags:\s*(\d+)/m.exec(fs.readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8'))![1];
      const link = fs.readlinkSync(`/proc/${pid}/fd/${fd}`).replace(/^pipe:\[\d+\]$/, 'pipe');
      m.set(`${pid === fx.pid ? 'parent' : 'child'} ${fd}`, `flags ${flags} ${link}`);
    }
  }
  return m;
}

test('dump of the tree: every fd is in the images, the shared ones once', async () => {
  assert.ok(child > 0, 'the fixture names its child');
  assert.equal(Number(statFields(child)[1]), fx.pid);
  assert.deepEqual(listFds(fx.pid), FDS);
  assert.deepEqual(listFds(child), FDS);
  tableAtDump = fdTable();
  const r = dumpOk(fx.pid, dir);
  assert.match(r.stderr, /\b2 processes\b/);
  await fx.reap();
  await waitGone([fx.pid, child], 5000);
  snap = snapshotFiles(fx.dir);

  const files = readImage(dir, 'files.img', 'FILES', 'file_entry');
  const regs = files.filter((f) => f.reg).map((f) => f.reg!);
  const a = regs.filter((r) => r.name === path.join(fx.dir, 'a.dat'));
  assert.equal(a.length, 1, 'a.dat: one file entry for parent and child');
  assert.equal(BigInt(a[0].pos), 1234n);
  assert.equal(regs.filter((r) => r.name === path.join(fx.dir, 'd.dat')).length, 1, 'fds 20 and 21 of both: one entry');
  const fdinfo = readImage(dir, `fdinfo-${readImage(dir, `ids-${fx.pid}.img`, 'IDS', 'task_kobj_ids_entry')[0].files_id}.img`, 'FDINFO', 'fdinfo_entry');
  assert.deepEqual(fdinfo.map((e) => String(e.fd)), FDS);
  const byFd = new Map(fdinfo.map((e) => [e.fd as number, e]));
  assert.equal(byFd.get(20)!.id, byFd.get(21)!.id, 'fd 20 and 21 name the same file');
  for (const [fd, cloexec] of [[7, 0], [10, 1], [21, 1], [42, 1], [61, 1]]) assert.equal(byFd.get(fd)!.flags, cloexec, `fd ${fd} FD_CLOEXEC`);
});

test('restore: same fds, flags, offsets, sharing, pipe data, cwd and umask; the fixture PASSes', async () => {
  assert.ok(snap, 'dumped');
  const { pid, r } = restoreDetached(dir);
  fx.restored();
  assert.equal(pid, fx.pid);
  assert.match(r.stderr, /and 1 descendant/);
  assert.equal(Number(statFields(child)[1]), fx.pid, 'the child is the restored parent\'s');
  for (const p of [fx.pid, child]) assert.equal(tracerPid(p), 0);
  assert.deepEqual(fdTable(), tableAtDump, 'fdinfo flags and targets of every fd, parent and child');
  assert.equal(fs.readlinkSync(`/proc/${fx.pid}/cwd`), path.join(fx.dir, 'work'));
  assert.equal(fs.readFileSync(`/proc/${child}/status`, 'utf8').match(/^Umask:\s*(\d+)/m)?.[1], '0027');

  const { status, log } = await fx.terminate();
  assert.match(log, /^CHILD OK$/m, log);
  assert.match(log, /^PASS$/m, log);
  assert.doesNotMatch(log, /FAIL/, log);
  assert.deepEqual(status, { kind: 'exited', pid: fx.pid, code: 0 });
  await waitGone([child], 3000);
  // What the fixture wrote through its restored fds went to the right places.
  assert.equal(fs.readFileSync(path.join(fx.dir, 'd.dat')).subarray(300, 305).toString(), '12345', 'fd 20 wrote at offset 300');
  assert.ok(fs.readFileSync(path.join(fx.dir, 'b.log')).subarray(-4).equals(Buffer.from('tail')), 'O_APPEND wrote at the end');
});

for (const [what, change, file] of [
  ['truncated', (p: string) => fs.truncateSync(p, 100), 'a.dat'],
  ['appended to', (p: string) => fs.appendFileSync(p, 'more'), 'b.log'],
] as const) {
  test(`a file ${what} between dump and restore: refused, naming it; no process left`, () => {
    putBack(snap);
    const p = path.join(fx.dir, file);
    change(p);
    const r = runStasis(['restore', '-D', dir, '-d']);
    assertOneLineError(r, new RegExp(`${p.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}.*changed size`));
    assert.match(r.stderr, /--skip-file-check/);
    for (const pid of [fx.pid, child]) assert.ok(!fs.existsSync(`/proc/${pid}`), `pid ${pid} not created`);
    assert.deepEqual(descendantsOf().map((x) => `${x} ${cmdline(x)}`), [], 'no process of ours');
  });
}

test('--skip-file-check restores anyway (b.log appended to: the fixture appends after the new end)', async () => {
  putBack(snap);
  const p = path.join(fx.dir, 'b.log');
  fs.appendFileSync(p, 'more');
  const { pid } = restoreDetached(dir, ['--skip-file-check']);
  fx.restored();
  assert.equal(pid, fx.pid);
  const { status, log } = await fx.terminate();
  assert.match(log, /^PASS$/m, log);
  assert.deepEqual(status, { kind: 'exited', pid: fx.pid, code: 0 });
  await waitGone([child], 3000);
  const b = fs.readFileSync(p);
  assert.equal(b.length, 50 + 4 + 4);
  assert.equal(b.subarray(50).toString(), 'moretail');
});
