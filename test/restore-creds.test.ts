// Credentials and the other per-task attributes a restore used to get wrong
// (it ran everything as stasis's root): the creds fixture's three threads,
// each with its own uids, gids, groups, five capability sets, securebits
// and no_new_privs, its own scheduling policy and nice, and the process's
// oom_score_adj, loginuid, THP setting, membarrier registrations and
// dumpable flag, come back exactly; the fixture checks it all itself, and
// that it cannot get any privilege back. A restore that may not create
// what the images describe is refused before anything exists. Non-root
// C/R of one's own process works with CAP_CHECKPOINT_RESTORE, and C/R by
// the root of a user namespace that owns its pid namespace.
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import {
  Fixture, initHarness, runStasis, describeCli, tmpDir, restoreDetached, reapZombies, descendantsOf, cmdline,
  waitGone, rewriteImage, buildFixture, STASIS, reap, type CliResult,
} from './harness';
import { readImage, parts } from '../src/images/image';
import { readStatus } from '../src/proc/proc';
import { abi, tryKill } from '../src/sys';

const STATUS_LINES = ['Uid', 'Gid', 'Groups', 'CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb', 'NoNewPrivs', 'Seccomp'];
const NOBODY = ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups'];
const WITH_CR = ['--inh-caps=+checkpoint_restore', '--ambient-caps=+checkpoint_restore'];

let fx: Fixture;
let root: string;
let images: string;
let tids: Map<string, number>;
let before0: Record<string, string>;

before(async () => {
  initHarness();
  root = tmpDir('rcreds');
  fs.chmodSync(root, 0o755);
  fx = await Fixture.start('creds', { pthread: true });
  tids = threadIds(fx);
});

after(async () => {
  await fx?.kill();
  fs.rmSync(root, { recursive: true, force: true });
});

/** The fixture's threads by role: our id of each (THREAD role tid nstid). */
function threadIds(f: Fixture): Map<string, number> {
  return new Map([...f.log().matchAll(/^THREAD (\w+) (\d+) (\d+)$/gm)].map((m) => [m[1], Number(m[2])]));
}

/** Per thread: the credential lines of its status, its policy, rt priority and nice; per process: oom, loginuid. */
function snapshot(pid: number, tids: Map<string, number>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [role, tid] of tids) {
    const st = readStatus(tid);
    for (const k of STATUS_LINES) out[`${role} ${k}`] = st.get(k) ?? '(none)';
    const stat = fs.readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // fields 19 (nice), 40 (rt_priority), 41 (policy), counted from 1 with pid and comm
    out[`${role} sched`] = `nice ${f[16]} rtprio ${f[37]} policy ${f[38]}`;
  }
  out.oom_score_adj = fs.readFileSync(`/proc/${pid}/oom_score_adj`, 'utf8').trim();
  out.loginuid = fs.readFileSync(`/proc/${pid}/loginuid`, 'utf8').trim();
  return out;
}

/** Nothing of a refused restore exists: no task under the pid, no descendant of ours. */
async function assertNothingLeft(what: string): Promise<void> {
  await waitGone([fx.pid], 5000);
  reapZombies();
  assert.deepEqual(descendantsOf().map((p) => `${p}: ${cmdline(p)}`), [], `${what}: processes left behind`);
}

function runAs(pre: string[], args: string[]): CliResult {
  const r = spawnSync(pre[0], [...pre.slice(1), process.execPath, STASIS, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 60000 });
  if (r.error) throw r.error;
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

async function assertRefused(r: CliResult, re: RegExp, what: string): Promise<void> {
  assert.equal(r.status, 1, `${what}: ${describeCli(r)}`);
  const lines = r.stderr.trimEnd().split('\n');
  assert.equal(lines.length, 1, `${what}: one line: ${r.stderr}`);
  assert.match(lines[0], re, what);
  await assertNothingLeft(what);
}

test('the fixture gave up privileges as it means to, differently in each thread', () => {
  assert.deepEqual([...tids.keys()], ['lead', 'b', 'c']);
  before0 = snapshot(fx.pid, tids);
  const bnd0 = BigInt('0x' + before0['c CapPrm']); // thread c kept everything it started with
  const hex = (v: bigint) => v.toString(16).padStart(16, '0');
  const bit = (c: number) => 1n << BigInt(c);
  assert.equal(before0['lead Uid'], '65534\t65534\t65534\t65534');
  assert.equal(before0['lead Groups'], '1 2 3');
  assert.equal(before0['lead CapPrm'], hex(bit(0) | bit(5) | bit(10)));
  assert.equal(before0['lead CapEff'], hex(bit(5) | bit(10)));
  assert.equal(before0['lead CapInh'], hex(bit(10) | bit(25)));
  assert.equal(before0['lead CapAmb'], hex(bit(10)));
  assert.equal(before0['lead CapBnd'], hex(bnd0 & ~(bit(16) | bit(17) | bit(25))));
  assert.equal(before0['lead NoNewPrivs'], '1');
  assert.equal(before0['b Uid'], '1000\t1001\t1002\t1002');
  assert.equal(before0['b Gid'], '2000\t2001\t2002\t2002');
  assert.equal(before0['b CapPrm'], hex(0n));
  assert.equal(before0['b NoNewPrivs'], '0');
  assert.equal(before0['c Uid'], '0\t0\t0\t0');
  assert.equal(before0['c CapEff'], hex(bnd0 & ~bit(21)));
  assert.equal(before0['c CapBnd'], hex(bnd0 & ~bit(13)));
  assert.equal(before0['lead sched'], `nice 5 rtprio 0 policy ${abi.SCHED.BATCH}`);
  assert.equal(before0['b sched'], `nice -3 rtprio 3 policy ${abi.SCHED.FIFO}`);
  assert.equal(before0['c sched'], `nice 12 rtprio 0 policy ${abi.SCHED.IDLE}`);
  assert.equal(before0.oom_score_adj, '345');
  assert.equal(before0.loginuid, '4321');
});

test('the dump writes each thread\'s credentials, ambient set and no_new_privs included, and its scheduling', async () => {
  images = path.join(root, 'images');
  const r = runStasis(['dump', '-t', String(fx.pid), '-D', images]);
  assert.equal(r.status, 0, describeCli(r));
  await fx.reap();
  const core = (role: string) => readImage(images, `core-${tids.get(role)}.img`, 'CORE', 'core_entry')[0];
  const lead = core('lead');
  assert.deepEqual(lead.thread_core!.creds!.cap_amb, [1 << 10, 0]);
  assert.equal(lead.thread_core!.creds!.no_new_privs, 1);
  assert.equal(lead.thread_core!.creds!.secbits, 0x43);
  assert.deepEqual(lead.thread_core!.creds!.groups, [1, 2, 3]);
  assert.equal(lead.tc!.membarrier_registration_mask, 0x14);
  assert.equal(lead.tc!.loginuid, 4321);
  assert.equal(lead.tc!.oom_score_adj, 345);
  const b = core('b').thread_core!;
  assert.deepEqual([b.creds!.uid, b.creds!.euid, b.creds!.suid, b.creds!.fsuid], [1000, 1001, 1002, 1002]);
  assert.equal(b.creds!.no_new_privs, 0);
  assert.deepEqual([b.sched_policy, b.sched_prio, b.sched_nice], [abi.SCHED.FIFO | abi.SCHED.RESET_ON_FORK, 3, -3]);
  const c = core('c').thread_core!;
  assert.deepEqual([c.sched_policy, c.sched_prio, c.sched_nice], [abi.SCHED.IDLE, undefined, 12]);
  assert.equal(c.creds!.secbits, 0x30);
  // Readable by the unprivileged restores below (files of root's are trusted).
  spawnSync('chmod', ['-R', 'a+rX', images]);
});

test('a user without CAP_CHECKPOINT_RESTORE is refused before anything is created', async () => {
  await assertRefused(runAs(NOBODY, ['restore', '-D', images, '-d']),
    /^stasis: restoring processes under their own pids needs CAP_CHECKPOINT_RESTORE \(or CAP_SYS_ADMIN\); stasis runs as uid 65534 and the programs it starts have no capabilities/,
    'nobody without capabilities');
});

test('a user with CAP_CHECKPOINT_RESTORE only may not create other ids or capabilities: refused before anything is created', async () => {
  await assertRefused(runAs([...NOBODY, ...WITH_CR], ['restore', '-D', images, '-d']),
    new RegExp(`^stasis: cannot restore the credentials of pid ${fx.pid} \\(uid 65534\\): supplementary groups \\[1, 2, 3\\] needs CAP_SETGID; stasis runs as uid 65534 and the programs it starts have CAP_CHECKPOINT_RESTORE$`),
    'nobody with CAP_CHECKPOINT_RESTORE');
});

test('no_new_privs cannot be cleared: a restore under it is refused for the thread without it', async () => {
  await assertRefused(runAs(['setpriv', '--no-new-privs'], ['restore', '-D', images, '-d']),
    new RegExp(`^stasis: cannot restore the credentials of thread ${tids.get('b')} of pid ${fx.pid} \\(uid 1001\\): no_new_privs is 0 in the image but set for the restore`),
    'restore under no_new_privs');
});

test('an oom_score_adj below what stasis may set is refused before anything is created', async () => {
  const d = path.join(root, 'oom');
  fs.cpSync(images, d, { recursive: true });
  const file = `core-${fx.pid}.img`;
  const [core] = readImage(d, file, 'CORE', 'core_entry');
  core.tc!.oom_score_adj = -500;
  rewriteImage(d, file, 'CORE', parts('core_entry', [core]));
  const capEff = BigInt('0x' + readStatus(process.pid).get('CapEff'));
  // An edited checkpoint: its digest no longer matches (what this checks comes after).
  const r = runStasis(['restore', '-D', d, '-d', '--no-verify']);
  if (capEff & (1n << BigInt(abi.CAP.SYS_RESOURCE))) {
    // A restorer with CAP_SYS_RESOURCE sets it; then this is a plain restore (killed at once).
    assert.equal(r.status, 0, describeCli(r));
    assert.equal(fs.readFileSync(`/proc/${fx.pid}/oom_score_adj`, 'utf8').trim(), '-500');
    fx.restored();
    tryKill(fx.pid, abi.SIG.SIGKILL);
    await fx.reap();
  } else {
    await assertRefused(r, new RegExp(`^stasis: cannot restore oom_score_adj -500 of pid ${fx.pid}: below stasis's own \\(0\\) it needs CAP_SYS_RESOURCE$`), 'oom_score_adj -500');
  }
});

test('restore: every thread has exactly its credentials and scheduling back, the process its attributes; the fixture checks itself', async () => {
  const { pid } = restoreDetached(images);
  fx.restored();
  assert.equal(pid, fx.pid);
  assert.deepEqual(snapshot(fx.pid, tids), before0);
  const { status, log } = await fx.terminate();
  assert.match(log, /^PASS$/m, log);
  assert.doesNotMatch(log, /FAIL/, log);
  assert.equal(status.kind, 'exited');
  assert.equal(status.kind === 'exited' && status.code, 0);
});

test('non-root: a user dumps its own process and restores it with CAP_CHECKPOINT_RESTORE, which the process does not get', async () => {
  const bin = buildFixture('counter');
  const own = await Fixture.startCommand('counter', (dir) => [...NOBODY, bin, dir]);
  try {
    // Its log was opened by our shell: let the restored process (uid 65534) open it again.
    fs.chmodSync(own.dir, 0o755);
    fs.chmodSync(own.logPath, 0o666);
    const d = path.join(own.dir, 'images');
    fs.mkdirSync(d);
    fs.chownSync(d, 65534, 65534);
    const dr = runAs(NOBODY, ['dump', '-t', String(own.pid), '-D', d]);
    assert.equal(dr.status, 0, describeCli(dr));
    await own.reap();
    const rr = runAs([...NOBODY, ...WITH_CR], ['restore', '-D', d, '-d']);
    assert.equal(rr.status, 0, describeCli(rr));
    own.restored();
    const st = readStatus(own.pid);
    assert.equal(st.get('Uid'), '65534\t65534\t65534\t65534');
    for (const k of ['CapInh', 'CapPrm', 'CapEff', 'CapAmb']) assert.equal(st.get(k), '0000000000000000', k);
    await own.assertCounting();
    const { log } = await own.terminate();
    assert.match(log, /^PASS$/m, log);
  } finally {
    await own.kill();
  }
});

/** In a new user namespace (root there: our uid mapped to 0), optionally with its own pid namespace. */
function inUserns(pidns: boolean, script: string, ...args: string[]): { status: number | null; out: string } {
  const r = spawnSync('timeout', ['120', 'unshare', '--user', '--map-root-user', ...(pidns ? ['--pid', '--fork', '--mount-proc'] : []),
    'bash', '-c', script, 'bash', ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  if (r.error) throw r.error;
  return { status: r.status, out: r.stdout + r.stderr };
}

test('in a user namespace that owns its pid namespace, its root dumps and restores; from one that does not own it, refused', async () => {
  const d = tmpDir('rcreds-userns');
  try {
    const counter = buildFixture('counter');
    // bash is the namespace's init: it reaps the counter; waits are on the log, never on time.
    const script = `set -e
      "$1" "$2" > "$2/log" 2>&1 &
      P=$!
      until grep -q '^READY$' "$2/log"; do sleep 0.01; done
      "$3" "$4" dump -t $P -D "$2/img"
      wait $P || true
      "$3" "$4" restore -D "$2/img" -d
      grep -E '^(Uid|CapPrm):' /proc/$P/status
      kill -TERM $P
      until grep -q -E '^(PASS|FAIL)' "$2/log"; do sleep 0.01; done
      grep -E '^(PASS|FAIL)' "$2/log"`;
    const ok = inUserns(true, script, counter, d, process.execPath, STASIS);
    assert.equal(ok.status, 0, ok.out);
    assert.match(ok.out, /^dumped pid 2 \(1 process, 1 thread\)/m);
    assert.match(ok.out, /^restored pid 2 /m);
    assert.match(ok.out, /^Uid:\t0\t0\t0\t0$/m);
    assert.match(ok.out, /^PASS$/m);
    const refused = inUserns(false, '"$1" "$2" restore -D "$3" -d', process.execPath, STASIS, path.join(d, 'img'));
    assert.equal(refused.status, 1, refused.out);
    assert.equal(refused.out, 'stasis: stasis\'s pid namespace belongs to a user namespace above its own (EPERM): its capabilities do not reach it, so pids cannot be chosen; restore from the user namespace that owns the pid namespace\n');
  } finally {
    fs.rmSync(d, { recursive: true, force: true });
  }
});

test('in a pid namespace of its own (the images hold its ids, not ours): the same, set through our ids of the new tasks', async () => {
  const ns = await Fixture.start('creds', { pthread: true, args: ['pidns'] });
  try {
    const init = Number(/^CHILD (\d+)$/m.exec(ns.log())![1]);
    const inner = new Map([...ns.log().matchAll(/^THREAD (\w+) (\d+) (\d+)$/gm)].map((m) => [Number(m[3]), m[1]]));
    assert.deepEqual([...inner.values()], ['lead', 'b', 'c']);
    const was = snapshot(init, threadIds(ns));
    assert.equal(was['lead Uid'], '65534\t65534\t65534\t65534');
    const d = path.join(root, 'pidns');
    const r = runStasis(['dump', '-t', String(init), '-D', d]);
    assert.equal(r.status, 0, describeCli(r));
    await waitGone([init]);
    const rr = runStasis(['restore', '-D', d, '-d', '--pidfile', 'init.pid']);
    assert.equal(rr.status, 0, describeCli(rr));
    const outer = Number(fs.readFileSync(path.join(d, 'init.pid'), 'utf8'));
    // Our ids of its threads now: by their ids inside (the last of NSpid).
    const now = new Map<string, number>();
    for (const t of fs.readdirSync(`/proc/${outer}/task`).map(Number)) {
      const nspid = readStatus(t).get('NSpid')!.split(/\s+/).map(Number);
      now.set(inner.get(nspid[nspid.length - 1])!, t);
    }
    assert.deepEqual(snapshot(outer, now), was);
    tryKill(outer, abi.SIG.SIGTERM);
    const st = await reap(outer, 10000);
    assert.equal(st.kind === 'exited' && st.code, 0, ns.log());
    assert.match(ns.log(), /^PASS$/m);
  } finally {
    await ns.kill();
    reapZombies();
  }
});
