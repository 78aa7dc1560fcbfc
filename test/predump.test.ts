// Pre-dump and incremental dumps (criu's pre-dump, --prev-images-dir,
// --track-mem) with write tracking through userfaultfd write-protect (async)
// and PAGEMAP_SCAN: the predump fixture fills memory with known patterns,
// changes some of it between the steps (rewrites, MADV_DONTNEED, pages
// written for the first time, a region unmapped and mapped again, a region
// moved), and checks every byte of it after the restore (PASS/FAIL).
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Fixture, initHarness, runStasis, describeCli, tmpDir, listFds } from './harness';
import { startPredump, step, ok, pageCounts, restoreAndCheck, PREDUMP_MIB } from './predump-helpers';

let root: string;
const started: Fixture[] = [];

before(() => {
  initHarness();
  root = tmpDir('predump');
});

after(async () => {
  for (const fx of started) await fx.kill();
  fs.rmSync(root, { recursive: true, force: true });
});

const start = () => startPredump(started);

function preDump(fx: Fixture, dir: string, prev?: string): void {
  ok(runStasis(['pre-dump', '-t', String(fx.pid), '-D', dir, ...(prev ? ['--prev-images-dir', prev] : [])]), `pre-dump into ${dir}`);
}

/** The final dump (the fixture is killed and reaped). With its own copy round first (--pre-copy): dump-precopy.test.ts. */
async function finalDump(fx: Fixture, dir: string, prev: string): Promise<void> {
  ok(runStasis(['dump', '-t', String(fx.pid), '-D', dir, '--prev-images-dir', prev, '--track-mem']), `dump into ${dir}`);
  const st = await fx.reap();
  assert.equal(st.kind, 'signaled', 'killed by the dump');
}

/** The task's fds that are userfaultfds. */
function uffdFds(pid: number): string[] {
  return listFds(pid).filter((fd) => { try { return fs.readlinkSync(`/proc/${pid}/fd/${fd}`) === 'anon_inode:[userfaultfd]'; } catch { return false; } });
}

/** The task's userfaultfd of ours: its fd number and inode. */
function uffdOf(pid: number): { fd: number; ino: number } {
  const fds = uffdFds(pid);
  assert.equal(fds.length, 1, `one userfaultfd in ${pid}: ${fds}`);
  return { fd: Number(fds[0]), ino: fs.statSync(`/proc/${pid}/fd/${fds[0]}`).ino };
}

function hasUffd(pid: number): boolean {
  return uffdFds(pid).length > 0;
}

test('pre-dump then dump --prev-images-dir --track-mem: only the rewritten pages are copied; restore is exact', async () => {
  const fx = await start();
  const d1 = path.join(root, 'single-1'), d2 = path.join(root, 'single-2');
  preDump(fx, d1);
  assert.ok(fx.alive, 'the task runs on after a pre-dump');
  assert.ok(hasUffd(fx.pid), 'the task holds the tracking userfaultfd');
  await step(fx); // every 10th page rewritten, 8 dropped, 4 new
  await finalDump(fx, d2, '../single-1');
  assert.equal(fs.readlinkSync(path.join(d2, 'parent')), '../single-1', 'criu\'s parent link, relative as given');
  const pre = pageCounts(d1, fx.pid), inc = pageCounts(d2, fx.pid);
  assert.equal(pre.inParent, 0);
  const total = PREDUMP_MIB * 256;
  assert.ok(pre.copied >= total - total / 97 - 4, `pre-dump copied ${pre.copied} pages`);
  // ~10% rewritten (+4 new, + the data, stack and model pages): far fewer than all.
  assert.ok(inc.copied < total / 5, `the dump copied ${inc.copied} pages of ${total}`);
  assert.ok(inc.copied >= total / 10, `the dump copied ${inc.copied} pages: at least the ${total / 10} rewritten`);
  assert.ok(inc.inParent > total / 2, `${inc.inParent} pages referred to the parent`);
  const files = fs.readdirSync(d2);
  assert.ok(!files.some((f) => /^(eventfd|signalfd|userfaultfd)/.test(f)));
  ok(runStasis(['check-images', d2]), 'check-images of the chain');
  await restoreAndCheck(fx, d2);
});

test('a chain of two pre-dumps, with regions unmapped, mapped again and moved in between, restores exactly', async () => {
  const fx = await start();
  const d = [1, 2, 3].map((i) => path.join(root, `chain-${i}`));
  preDump(fx, d[0]);
  const armed = uffdOf(fx.pid);
  await step(fx);
  preDump(fx, d[1], '../chain-1');
  // Re-armed in place: the same userfaultfd, moved to the next fd (the new generation).
  assert.deepEqual(uffdOf(fx.pid), { fd: armed.fd + 1, ino: armed.ino });
  await step(fx); // unmap + map B, move D
  await step(fx);
  await finalDump(fx, d[2], '../chain-2');
  const mid = pageCounts(d[1], fx.pid);
  assert.ok(mid.inParent > 0 && mid.copied > 0, `the second pre-dump refers to the first (${mid.inParent} pages) and copies the rest (${mid.copied})`);
  const last = pageCounts(d[2], fx.pid);
  assert.ok(last.inParent > 0, 'the dump refers to its parent');
  await restoreAndCheck(fx, d[2]);
});

test('a process that unmaps and maps regions after its pre-dump restores exactly', async () => {
  const fx = await start();
  const d1 = path.join(root, 'remap-1'), d2 = path.join(root, 'remap-2');
  preDump(fx, d1);
  await step(fx);
  await step(fx); // region B replaced at the same address, region D moved
  await finalDump(fx, d2, '../remap-1');
  await restoreAndCheck(fx, d2);
});

test('a plain dump of a pre-dumped task leaves out the tracking fd; with -R it closes it', async () => {
  const fx = await start();
  const d1 = path.join(root, 'plain-1'), d2 = path.join(root, 'plain-2');
  preDump(fx, d1);
  assert.ok(hasUffd(fx.pid));
  ok(runStasis(['dump', '-t', String(fx.pid), '-D', d2, '-R']), 'plain dump -R');
  assert.ok(!hasUffd(fx.pid), 'the tracking userfaultfd is closed in a task that goes on untracked');
  assert.ok(!fs.existsSync(path.join(d2, 'parent')));
  assert.equal(pageCounts(d2, fx.pid).inParent, 0);
  // Pre-dump again, then dump -R --track-mem: tracking goes on.
  preDump(fx, path.join(root, 'plain-3'));
  ok(runStasis(['dump', '-t', String(fx.pid), '-D', path.join(root, 'plain-4'), '-R', '--track-mem', '--prev-images-dir', '../plain-3']), 'dump -R --track-mem');
  assert.ok(hasUffd(fx.pid), 'armed again for a next dump');
  await step(fx);
  await finalDump(fx, path.join(root, 'plain-5'), '../plain-4');
  await restoreAndCheck(fx, path.join(root, 'plain-5'));
});

test('a broken chain is refused before anything is created: missing parent, loop, foreign owner, replaced parent', async () => {
  const fx = await start();
  const d1 = path.join(root, 'broken-1'), d2 = path.join(root, 'broken-2');
  preDump(fx, d1);
  await step(fx);
  await finalDump(fx, d2, '../broken-1');
  const copy = (name: string, parent: string | undefined, from = d2): string => {
    const to = path.join(root, name);
    fs.cpSync(from, to, { recursive: true, verbatimSymlinks: true });
    if (parent !== undefined) {
      fs.rmSync(path.join(to, 'parent'), { force: true });
      fs.symlinkSync(parent, path.join(to, 'parent'));
    }
    return to;
  };
  const refused = (dir: string, code: string, re: RegExp) => {
    const r = runStasis(['restore', '-D', dir, '-d', '--json']);
    assert.equal(r.status, 1, describeCli(r));
    const out = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { error: { code: string; message: string } };
    assert.equal(out.error.code, code, r.stderr);
    assert.match(out.error.message, re);
    assert.equal(r.stderr.trim().split('\n').length, 1, 'one line');
    assert.ok(!fs.existsSync(`/proc/${fx.pid}`), 'nothing was created');
  };
  refused(copy('broken-missing', '../no-such-dir'), 'STASIS_BAD_IMAGE', /no-such-dir does not exist/);
  // a loop: x2 -> x1 -> x2
  const x1 = copy('broken-x1', '../broken-x2', d1);
  const x2 = copy('broken-x2', '../broken-x1');
  void x1;
  refused(x2, 'STASIS_BAD_IMAGE', /loops back/);
  const foreign = copy('broken-foreign-parent', undefined, d1);
  fs.chownSync(foreign, 65534, 65534);
  refused(copy('broken-foreign', '../broken-foreign-parent'), 'STASIS_UNSAFE', /owned by uid 65534/);
  // The parent replaced by another checkpoint: its digest no longer matches the pin.
  const other = copy('broken-other-parent', undefined, d1);
  fs.appendFileSync(path.join(other, 'stasis-digest'), '');
  fs.writeFileSync(path.join(other, 'stasis-track'), 'stasis-track 1\n');
  refused(copy('broken-replaced', '../broken-other-parent'), 'STASIS_CORRUPT', /stasis-track|not the parent/);
  // The chain itself is good: it restores.
  await restoreAndCheck(fx, d2);
});

test('a dump on a pre-dump whose tracking was re-armed since by another copies everything', async () => {
  const fx = await start();
  const d = ['a', 'b', 'c', 'd'].map((x) => path.join(root, `stale-${x}`));
  preDump(fx, d[0]);
  await step(fx);
  preDump(fx, d[1], '../stale-a'); // re-arms in place: a's generation is gone
  await step(fx);
  ok(runStasis(['dump', '-t', String(fx.pid), '-D', d[2], '-R', '--track-mem', '--prev-images-dir', '../stale-a']), 'dump on the older pre-dump');
  const c = pageCounts(d[2], fx.pid);
  assert.equal(c.inParent, 0, 'nothing trusted to the parent whose tracking is gone');
  assert.ok(c.copied >= PREDUMP_MIB * 256 - 8, `every page copied (${c.copied})`);
  await step(fx);
  await finalDump(fx, d[3], '../stale-c');
  assert.ok(pageCounts(d[3], fx.pid).inParent > 0, 'the -R --track-mem dump armed a generation of its own');
  await restoreAndCheck(fx, d[3]);
});
