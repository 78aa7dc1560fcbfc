// Errors are one clear line, never a stack trace (issue "Trust", item 4): a
// full disk at any point of a dump, an images directory we may not write or
// read, a pid of 2^31 in an image, dangling links as the images directory.
// Each is one line naming the file and the cause; the target runs on; no
// partial checkpoint is left looking complete.
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import {
  Fixture, initHarness, runStasis, describeCli, tmpDir, waitFor, procState, tracerPid, restoreDetached, reapZombies,
  descendantsOf, cmdline, rewriteImage, STASIS, type CliResult,
} from './harness';
import { readImage, parts } from '../src/images/image';
import { tryKill, abi } from '../src/sys';

let root: string;
const fixtures: Fixture[] = [];
const mounts: string[] = [];

before(() => {
  initHarness();
  root = tmpDir('ioerr');
});

after(async () => {
  for (const m of mounts) spawnSync('umount', ['-l', m]);
  for (const f of fixtures) await f.kill();
  // Directories the tests closed (mode 0) are removed as root: fine.
  fs.rmSync(root, { recursive: true, force: true });
});

async function counter(): Promise<Fixture> {
  const fx = await Fixture.start('counter');
  fixtures.push(fx);
  return fx;
}

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** Exit `status`, nothing on stdout, one line `stasis: ...` matching `re`, no stack trace. */
function assertOneLine(r: CliResult, re: RegExp, what: string, status = 1): void {
  assert.equal(r.status, status, `${what}: ${describeCli(r)}`);
  assert.equal(r.stdout, '', `${what}: nothing on stdout`);
  const lines = r.stderr.trimEnd().split('\n');
  assert.equal(lines.length, 1, `${what}: one line: ${r.stderr}`);
  assert.doesNotMatch(r.stderr, /internal error|RangeError|^\s+at /m, `${what}: no stack trace`);
  assert.match(lines[0], /^stasis: /);
  assert.match(lines[0], re, what);
}

async function assertRunsOn(fx: Fixture, what: string): Promise<void> {
  assert.ok(fx.alive, `${what}: target alive`);
  await waitFor(`${what}: TracerPid 0`, () => tracerPid(fx.pid) === 0, 3000, 5);
  await waitFor(`${what}: not stopped`, () => !/^[tT]$/.test(procState(fx.pid)), 3000, 5);
  await fx.assertCounting();
}

function assertNothingCreated(pid: number, what: string): void {
  reapZombies();
  assert.ok(!fs.existsSync(`/proc/${pid}`), `${what}: pid ${pid} stays free`);
  assert.deepEqual(descendantsOf().filter((p) => !fixtures.some((f) => f.pid === p)).map((p) => `${p}: ${cmdline(p)}`), [], `${what}: nothing left`);
}

/** No image, no staging or commit directory: nothing that could pass for a checkpoint. */
function assertNoPartialImages(d: string, what: string): void {
  if (!fs.existsSync(d)) return;
  assert.deepEqual(fs.readdirSync(d), [], `${what}: nothing left in ${d}`);
}

/** stasis as root without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH: file modes apply to it (ptrace still works). */
function runStasisNoDac(args: string[]): CliResult {
  const env = { ...process.env };
  delete env.STASIS_FAIL_AT;
  const r = spawnSync('setpriv', ['--bounding-set=-dac_override,-dac_read_search', process.execPath, STASIS, ...args], {
    env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 60000,
  });
  if (r.error) throw r.error;
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

function mountTmpfs(at: string, kib: number): void {
  fs.mkdirSync(at, { mode: 0o700 });
  const r = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${kib}k,mode=0700`, 'tmpfs', at], { encoding: 'utf8' });
  assert.equal(r.status, 0, `mount tmpfs: ${r.stderr}`);
  mounts.push(at);
}

function resizeTmpfs(at: string, kib: number): void {
  const r = spawnSync('mount', ['-o', `remount,size=${kib}k`, at], { encoding: 'utf8' });
  assert.equal(r.status, 0, `remount tmpfs: ${r.stderr}`);
}

test('a full disk at any point of a dump: one line naming the file, the target runs on, nothing partial left; an older checkpoint survives', async () => {
  const fx = await counter();
  const m = path.join(root, 'small');
  mountTmpfs(m, 4);
  const d = path.join(m, 'images');
  const named = new Set<string>();
  let fitted = 0;
  // Grow the file system a page at a time until the dump fits: every write
  // of the dump meets ENOSPC in one of these rounds, the digest's last.
  for (let kib = 4; kib <= 1024; kib += 4) {
    resizeTmpfs(m, kib);
    // Without -R: a failed dump must not kill the target.
    const r = runStasis(['dump', '-t', String(fx.pid), '-D', d]);
    if (r.status === 0) { fitted = kib; break; }
    assertOneLine(r, new RegExp(`^stasis: cannot write ${escapeRe(d)}/(\\S+): no space left on the device$`), `${kib} KiB`);
    named.add(/\/([^/\s]+): no space/.exec(r.stderr)![1]);
    assertNoPartialImages(d, `${kib} KiB`);
    await assertRunsOn(fx, `ENOSPC with ${kib} KiB`);
  }
  assert.ok(fitted > 0, 'the dump fits at last');
  assert.ok(named.has('pages-1.img'), `ENOSPC on the pages: ${[...named]}`);
  assert.ok(named.has('stasis-digest'), `ENOSPC on the digest, written last: ${[...named]}`);
  assert.ok(named.size >= 3, `ENOSPC met at several files: ${[...named]}`);
  await fx.reap();
  assert.equal(runStasis(['check-images', d]).status, 0);

  // A re-dump into a disk that holds only one checkpoint fails; the old one stays whole.
  const { pid } = restoreDetached(d);
  fx.restored();
  assert.equal(pid, fx.pid);
  const before = fs.readFileSync(path.join(d, 'stasis-digest'));
  const r = runStasis(['dump', '-t', String(fx.pid), '-D', d]);
  assertOneLine(r, new RegExp(`^stasis: cannot write ${escapeRe(d)}/\\S+: no space left on the device$`), 'a second checkpoint');
  await assertRunsOn(fx, 'ENOSPC beside an older checkpoint');
  assert.deepEqual(fs.readdirSync(d).filter((f) => f.startsWith('.')), [], 'no staging left');
  assert.ok(fs.readFileSync(path.join(d, 'stasis-digest')).equals(before), 'the older checkpoint is untouched');
  const c = runStasis(['check-images', d]);
  assert.equal(c.status, 0, describeCli(c));
  const { log } = await fx.terminate();
  assert.match(log, /^PASS$/m, log.slice(-300));
});

test('an images directory we may not write or read (EACCES): one line naming it; the target runs on', async () => {
  const fx = await counter();
  const ro = path.join(root, 'readonly');
  fs.mkdirSync(ro, { mode: 0o500 });
  const closed = path.join(root, 'closed');
  fs.mkdirSync(closed, { mode: 0 });
  const inClosed = path.join(closed, 'images');
  const dumpCases: [string, RegExp][] = [
    [ro, new RegExp(`^stasis: cannot write into images directory ${escapeRe(ro)}: permission denied$`)],
    [path.join(ro, 'sub'), new RegExp(`^stasis: cannot create images directory ${escapeRe(path.join(ro, 'sub'))}: permission denied$`)],
    [inClosed, new RegExp(`^stasis: cannot use images directory ${escapeRe(inClosed)}: permission denied$`)],
  ];
  for (const [d, re] of dumpCases) {
    assertOneLine(runStasisNoDac(['dump', '-t', String(fx.pid), '-D', d]), re, `dump -D ${d}`);
    await assertRunsOn(fx, `dump -D ${d}`);
  }
  assert.deepEqual(fs.readdirSync(ro), [], 'nothing written into the read-only directory');
  assert.deepEqual(fs.readdirSync(closed), [], 'nothing written into the closed directory');
  fs.chmodSync(closed, 0o700);

  // A real checkpoint, then its directory closed: a restore says so (not 'no such directory').
  const r = runStasis(['dump', '-t', String(fx.pid), '-D', inClosed]);
  assert.equal(r.status, 0, describeCli(r));
  await fx.reap();
  fs.chmodSync(closed, 0);
  assertOneLine(runStasisNoDac(['restore', '-D', inClosed, '-d']), new RegExp(`^stasis: cannot read images directory ${escapeRe(inClosed)}: permission denied$`), 'restore from a closed parent');
  fs.chmodSync(closed, 0o700);
  fs.chmodSync(inClosed, 0);
  assertOneLine(runStasisNoDac(['restore', '-D', inClosed, '-d']), new RegExp(`^stasis: cannot open images directory ${escapeRe(inClosed)}: permission denied$`), 'restore from a closed directory');
  assertOneLine(runStasisNoDac(['check-images', inClosed]), new RegExp(`^stasis: cannot open images directory ${escapeRe(inClosed)}: permission denied$`), 'check-images of a closed directory');
  fs.chmodSync(inClosed, 0o700);
  const core = path.join(inClosed, `core-${fx.pid}.img`);
  fs.chmodSync(core, 0);
  for (const extra of [[], ['--no-verify']]) {
    assertOneLine(runStasisNoDac(['restore', '-D', inClosed, '-d', ...extra]), new RegExp(`^stasis: ${escapeRe(core)}: cannot read: permission denied$`), `an unreadable image ${extra}`);
    assertNothingCreated(fx.pid, `an unreadable image ${extra}`);
  }
  fs.chmodSync(core, 0o600);
  const { pid } = restoreDetached(inClosed);
  fx.restored();
  assert.equal(pid, fx.pid);
  const { log } = await fx.terminate();
  assert.match(log, /^PASS$/m, log.slice(-300));
});

test('a pid of 2^31 (or 2^32-1) in pstree.img: refused in one line naming the file, nothing created', async () => {
  const fx = await counter();
  const d = path.join(root, 'bigpid');
  const r = runStasis(['dump', '-t', String(fx.pid), '-D', d]);
  assert.equal(r.status, 0, describeCli(r));
  await fx.reap();
  const orig = readImage(d, 'pstree.img', 'PSTREE', 'pstree_entry');
  const f = path.join(d, 'pstree.img');
  const saved = fs.readFileSync(f);
  for (const big of [2 ** 31, 2 ** 32 - 1]) {
    for (const field of ['pid', 'ppid', 'pgid', 'sid', 'threads'] as const) {
      const what = `${field} ${big}`;
      const e = { ...orig[0], ...(field === 'threads' ? { threads: [orig[0].pid, big] } : { [field]: big }) };
      rewriteImage(d, 'pstree.img', 'PSTREE', parts('pstree_entry', [e]));
      // The digest check refuses the edit first; without it, the reader's range check does.
      assertOneLine(runStasis(['restore', '-D', d, '-d']), new RegExp(`^stasis: ${escapeRe(f)}: .*${escapeRe(path.join(d, 'stasis-digest'))}`), what);
      assertOneLine(runStasis(['restore', '-D', d, '-d', '--no-verify']), new RegExp(`^stasis: ${escapeRe(f)}: pid ${big} is out of range$`), `${what}, --no-verify`);
      assertOneLine(runStasis(['show', d]), new RegExp(`^stasis: ${escapeRe(f)}: pid ${big} is out of range$`), `${what}, show`);
      assertNothingCreated(fx.pid, what);
      const c = runStasis(['check-images', d]);
      assert.equal(c.status, 1, describeCli(c));
      assert.match(c.stdout, new RegExp(`^${escapeRe(f)}: `, 'm'));
    }
  }
  fs.rmSync(f);
  fs.writeFileSync(f, saved, { mode: 0o600 });
  const { pid } = restoreDetached(d);
  fx.restored();
  assert.equal(pid, fx.pid);
  const { log } = await fx.terminate();
  assert.match(log, /^PASS$/m, log.slice(-300));
});

test('a dangling symbolic link as the images directory: one line saying so (not EEXIST, not "no such directory")', async () => {
  const fx = await counter();
  const target = path.join(root, 'gone', 'images');
  const link = path.join(root, 'dangling');
  fs.symlinkSync(target, link);
  const re = new RegExp(`${escapeRe(link)} is a symbolic link to ${escapeRe(target)}, which does not exist$`);
  assertOneLine(runStasis(['dump', '-t', String(fx.pid), '-D', link]), new RegExp(`^stasis: images directory ${escapeRe(link)}: ${re.source}`), 'dump -D link', 2);
  assertOneLine(runStasis(['dump', '-t', String(fx.pid), '-D', path.join(link, 'sub')]), re, 'dump -D link/sub', 2);
  assert.ok(!fs.existsSync(path.join(root, 'gone')), 'nothing created through the link');
  await assertRunsOn(fx, 'dump into a dangling link');
  assertOneLine(runStasis(['restore', '-D', link, '-d']), new RegExp(`^stasis: ${escapeRe(link)}: a symbolic link to ${escapeRe(target)}, which does not exist$`), 'restore -D link');
  assertOneLine(runStasis(['check-images', link]), new RegExp(`^stasis: ${escapeRe(link)}: a symbolic link to ${escapeRe(target)}, which does not exist$`), 'check-images link');
  // A link to a real directory is a directory: it works.
  fs.mkdirSync(path.join(root, 'gone'), { mode: 0o700 });
  fs.mkdirSync(target, { mode: 0o700 });
  const r = runStasis(['dump', '-t', String(fx.pid), '-D', link]);
  assert.equal(r.status, 0, describeCli(r));
  await fx.reap();
  const { pid } = restoreDetached(link);
  fx.restored();
  assert.equal(pid, fx.pid);
  tryKill(fx.pid, abi.SIG.SIGTERM);
  const st = await fx.reap();
  assert.equal(st.kind, 'exited');
  assert.match(fx.log(), /^PASS$/m);
});
