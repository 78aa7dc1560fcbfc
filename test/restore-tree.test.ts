// Process trees: a session leader, two children and two grandchildren, in
// four process groups (one of them led by a sibling) and two sessions (a
// grandchild leads its own), talking over pipes (one holding unread data)
// come back with the same pids, parents, sessions and groups; their pipes work, waitpid() in each parent returns its children
// with their exit codes; a tree stopped by job control comes back stopped and
// goes on after SIGCONT.
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  Fixture, initHarness, runStasis, describeCli, tmpDir, restoreDetached, waitFor, reapZombies, waitGone, statFields,
  procState, tracerPid, sleep, crit, descendantsOf, cmdline, pattern,
} from './harness';
import { readImage } from '../src/images/image';
import { readWithPayloads } from './harness';
import { tryKill, abi } from '../src/sys';

const NAMES = ['R', 'A', 'B', 'G', 'S'] as const;
type Name = typeof NAMES[number];
interface Ids { pid: number; ppid: number; pgid: number; sid: number }

const cleanup: (() => Promise<void> | void)[] = [];
let root: string;

before(() => {
  initHarness();
  root = tmpDir('rtree');
});

after(async () => {
  for (const f of cleanup.reverse()) await f();
  fs.rmSync(root, { recursive: true, force: true });
});

interface Tree { fx: Fixture; ids: Map<Name, Ids>; gen: number }

async function startTree(): Promise<Tree> {
  const fx = await Fixture.start('tree', { extraFds: true });
  const ids = new Map<Name, Ids>();
  for (const m of fx.log().matchAll(/^PROC (\w) (\d+) (\d+) (\d+) (\d+)$/gm)) {
    ids.set(m[1] as Name, { pid: Number(m[2]), ppid: Number(m[3]), pgid: Number(m[4]), sid: Number(m[5]) });
  }
  const t: Tree = { fx, ids, gen: 0 };
  cleanup.push(async () => {
    for (const n of NAMES) { const i = ids.get(n); if (i) { tryKill(i.pid, abi.SIG.SIGCONT); tryKill(i.pid, abi.SIG.SIGKILL); } }
    await fx.kill();
    await waitGone([...ids.values()].map((i) => i.pid), 5000).catch(() => undefined);
  });
  return t;
}

function pids(t: Tree): number[] {
  return NAMES.map((n) => t.ids.get(n)!.pid);
}

/** What the kernel says of each process: parent, group, session. */
function assertKernelIds(t: Tree, what: string): void {
  for (const n of NAMES) {
    const want = t.ids.get(n)!;
    const f = statFields(want.pid);
    assert.notEqual(f[0], 'Z', `${what}: ${n} alive`);
    const got = { pid: want.pid, ppid: Number(f[1]), pgid: Number(f[2]), sid: Number(f[3]) };
    assert.deepEqual(got, want, `${what}: ${n} (pid ${want.pid}): ppid/pgid/sid`);
  }
}

/** SIGUSR1 to R: one PONG through the pipes from each of A, B, G, S, with the ids it sees itself. */
async function pingRound(t: Tree, what: string): Promise<void> {
  t.gen++;
  const g = t.gen;
  tryKill(t.fx.pid, abi.SIG.SIGUSR1);
  const re = new RegExp(`^GOT PONG ${g} (\\w) (\\d+) (\\d+) (\\d+) (\\d+)$`, 'gm');
  const got = await waitFor(`${what}: 4 PONGs of round ${g}`, () => {
    const m = [...t.fx.log().matchAll(re)];
    return m.length >= 4 ? m : undefined;
  }, 5000, 5);
  assert.deepEqual(got.map((m) => m[1]).sort(), ['A', 'B', 'G', 'S'], `${what}: one PONG from each`);
  for (const m of got) {
    const want = t.ids.get(m[1] as Name)!;
    assert.deepEqual({ pid: Number(m[2]), ppid: Number(m[3]), pgid: Number(m[4]), sid: Number(m[5]) }, want,
      `${what}: ${m[1]}'s own getpid/getppid/getpgid/getsid`);
  }
}

/** Dump the whole tree (killing it), reap all five, restore it; returns the images dir. */
async function dumpAndRestore(t: Tree, name: string): Promise<string> {
  const dir = path.join(root, name);
  const r = runStasis(['dump', '-t', String(t.fx.pid), '-D', dir]);
  assert.equal(r.status, 0, describeCli(r));
  assert.match(r.stderr, /\b5 processes\b/);
  await t.fx.reap();
  // The children were re-parented to us when the dump killed the tree.
  await waitGone(pids(t), 5000);
  assert.deepEqual(descendantsOf().map((p) => `${p} ${cmdline(p)}`), [], 'nothing of the tree left');

  const { pid } = restoreDetached(dir);
  t.fx.restored();
  assert.equal(pid, t.fx.pid);
  return dir;
}

let t1: Tree;

test('the fixture built the tree it claims', async () => {
  t1 = await startTree();
  const { ids } = t1;
  assert.deepEqual([...ids.keys()].sort(), [...NAMES].sort());
  const R = ids.get('R')!, A = ids.get('A')!, B = ids.get('B')!, G = ids.get('G')!, S = ids.get('S')!;
  assert.equal(R.pid, t1.fx.pid);
  assert.deepEqual([R.sid, R.pgid], [R.pid, R.pid], 'R leads its session and group');
  assert.deepEqual([A.ppid, B.ppid, G.ppid, S.ppid], [R.pid, R.pid, A.pid, B.pid], 'parentage');
  assert.equal(A.pgid, A.pid, 'A leads a group');
  assert.equal(B.pgid, A.pid, 'B is in its sibling A\'s group');
  assert.equal(G.pgid, G.pid, 'G leads a group');
  assert.deepEqual([A.sid, B.sid, G.sid], [R.pid, R.pid, R.pid], 'R\'s session');
  assert.deepEqual([S.sid, S.pgid], [S.pid, S.pid], 'S leads a session (and group) of its own');
  assertKernelIds(t1, 'before the dump');
  await pingRound(t1, 'before the dump');
});

test('dump → restore: same pids, parents, sessions, groups; the pipes work', async () => {
  assert.ok(t1);
  const dir = await dumpAndRestore(t1, 'tree');
  const ps = JSON.parse(crit(['show', path.join(dir, 'pstree.img')])).entries as { pid: number; ppid: number; pgid: number; sid: number }[];
  assert.deepEqual(ps.map((e) => e.pid).sort(), pids(t1).sort(), 'pstree.img lists the five');
  // G's stash (3000 bytes, seed 77 in fixtures/tree.c), unread at the dump, is in the images.
  const queued = readWithPayloads(dir, 'pipes-data.img', 'PIPES_DATA', 'pipe_data_entry', (d) => d.bytes);
  assert.ok(queued.some((e) => (e.extra as Buffer).equals(pattern(77, 3000))), `the stash's queued data is in pipes-data.img (${queued.map((e) => e.bytes).join(', ')} bytes)`);

  const R = t1.ids.get('R')!;
  // The root's parent was the shell that started it; restored, it is stasis'
  // child and, stasis gone, ours (the subreaper's).
  t1.ids.set('R', { ...R, ppid: process.pid });
  assertKernelIds(t1, 'after the restore');
  for (const p of pids(t1)) assert.equal(tracerPid(p), 0, `${p} not traced`);
  await pingRound(t1, 'after the restore');
  await pingRound(t1, 'after the restore, again');
  // The log is one open file description shared by all five: nothing overwritten.
  const log = t1.fx.log();
  assert.equal([...log.matchAll(/^GOT PONG 1 /gm)].length, 4, 'the PONGs from before the dump are still in the log');
});

test('SIGTERM: unread pipe data intact, each parent reaps its children with their exit codes, PASS', async () => {
  const { status, log } = await t1.fx.terminate();
  assert.match(log, /^PASS$/m, log);
  assert.doesNotMatch(log, /FAIL/, log);
  const A = t1.ids.get('A')!.pid, B = t1.ids.get('B')!.pid;
  assert.match(log, new RegExp(`^REAPED ${A} 11$`, 'm'), 'R waited for A: exit 11');
  assert.match(log, new RegExp(`^REAPED ${B} 12$`, 'm'), 'R waited for B: exit 12');
  for (const n of ['A', 'B', 'G', 'S']) assert.match(log, new RegExp(`^BYE ${n}$`, 'm'));
  assert.deepEqual(status, { kind: 'exited', pid: t1.fx.pid, code: 0 });
  await waitGone(pids(t1), 3000);
  assert.deepEqual(reapZombies(), [], 'A and B were reaped by R, G by A, S by B: nothing re-parented to us');
});

test('a tree stopped by job control is restored stopped, and goes on after SIGCONT', async () => {
  const t = await startTree();
  const groups = [...new Set(NAMES.map((n) => t.ids.get(n)!.pgid))];
  assert.equal(groups.length, 4);
  for (const g of groups) assert.equal(tryKill(-g, abi.SIG.SIGSTOP), 0, `SIGSTOP to group ${g}`);
  for (const p of pids(t)) await waitFor(`${p} stopped`, () => procState(p) === 'T', 3000, 5);

  await dumpAndRestore(t, 'stopped');
  t.ids.set('R', { ...t.ids.get('R')!, ppid: process.pid });
  for (const p of pids(t)) await waitFor(`${p} untraced`, () => tracerPid(p) === 0, 2000, 5);
  await sleep(100); // time for a wrongly running task to show it
  for (const p of pids(t)) assert.equal(procState(p), 'T', `pid ${p} restored stopped`);
  assertKernelIds(t, 'restored stopped');
  const before = t.fx.log();

  for (const g of groups) assert.equal(tryKill(-g, abi.SIG.SIGCONT), 0, `SIGCONT to group ${g}`);
  for (const p of pids(t)) await waitFor(`${p} running`, () => procState(p) !== 'T', 3000, 5);
  assert.equal(t.fx.log(), before, 'nothing happened while stopped');
  await pingRound(t, 'after SIGCONT');
  const { status, log } = await t.fx.terminate();
  assert.match(log, /^PASS$/m, log);
  assert.deepEqual(status, { kind: 'exited', pid: t.fx.pid, code: 0 });
  await waitGone(pids(t), 3000);
});
