// Lazy restore (--lazy-pages): the tree runs before its private memory is in;
// pages are copied in on faults (user and kernel ones: a read() into lazy
// memory) and streamed meanwhile; the server exits when all are in. The lazy
// fixture (64 MiB of patterned memory, a region with holes, two threads with
// memory of their own, a child process) checks every byte itself, also after
// it dropped, moved and forked lazy memory before it was all in.
// STASIS_LAZY_HOLD=PATH holds the streaming (not the faults) until PATH
// exists: pages are then certainly missing while we look.
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawn } from 'node:child_process';
import { Fixture, initHarness, runStasis, describeCli, tmpDir, restoreDetached, listFds, reap, waitFor, STASIS } from './harness';
import { tryKill, abi } from '../src/sys';

let root: string;
const started: Fixture[] = [];

before(() => {
  initHarness();
  root = tmpDir('lazy');
});

after(async () => {
  for (const fx of started) await fx.kill();
  fs.rmSync(root, { recursive: true, force: true });
});

/** Start the fixture, dump it (killed), return it and its images. */
async function dumped(name: string): Promise<{ fx: Fixture; dir: string; child: number }> {
  const fx = await Fixture.start('lazy', { args: ['64'], pthread: true });
  started.push(fx);
  const child = Number(fx.manifest.values.get('CHILD')![0]);
  const dir = path.join(root, name);
  const r = runStasis(['dump', '-t', String(fx.pid), '-D', dir]);
  assert.equal(r.status, 0, describeCli(r));
  assert.equal((await fx.reap()).kind, 'signaled');
  assert.equal((await reap(child)).kind, 'signaled', 'the child, adopted by us, killed by the dump');
  return { fx, dir, child };
}

function hasUffd(pid: number): boolean {
  return listFds(pid).some((fd) => {
    try { return fs.readlinkSync(`/proc/${pid}/fd/${fd}`) === 'anon_inode:[userfaultfd]'; } catch { return false; }
  });
}

function taskState(pid: number, tid: string): string {
  const s = fs.readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
  return s.slice(s.lastIndexOf(')') + 2, s.lastIndexOf(')') + 3);
}

function tracer(pid: number): number {
  return Number(/^TracerPid:\s*(\d+)/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))![1]);
}

let probes = new Map<Fixture, number>();
/** SIGUSR1: the fixture reports resident pages and a read() into a page of lazy memory. */
async function probe(fx: Fixture): Promise<{ resident: number; total: number; read: string }> {
  const n = (probes.get(fx) ?? 0) + 1;
  probes.set(fx, n);
  tryKill(fx.pid, abi.SIG.SIGUSR1);
  const m = await fx.waitLog(new RegExp(`^PROBE ${n} resident=(\\d+) total=(\\d+) read=(\\w+)$`, 'm'), 30000);
  return { resident: Number(m[1]), total: Number(m[2]), read: m[3] };
}

function serverOf(stderr: string): number {
  const m = /^lazy pages: [\d.]+ MiB to serve, by pid (\d+)$/m.exec(stderr);
  assert.ok(m, `no lazy pages line in:\n${stderr}`);
  return Number(m[1]);
}

test('restore --lazy-pages (not detached): the tree runs, a read() into lazy memory works, every byte is right, no userfaultfd is left', async () => {
  const { fx, dir } = await dumped('attached');
  const cli = spawn(process.execPath, [STASIS, 'restore', '-D', dir, '--lazy-pages'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  cli.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
  const exited = new Promise<number | null>((resolve) => cli.on('exit', (code) => resolve(code)));
  await waitFor('the restore', () => /^lazy pages: /m.test(stderr) || /stasis: /.test(stderr), 60000);
  assert.match(stderr, new RegExp(`^restored pid ${fx.pid} and 1 descendant`, 'm'), stderr);
  assert.equal(serverOf(stderr), cli.pid, 'the command itself serves');
  const p = await probe(fx);
  assert.equal(p.read, 'ok', 'read() into a lazy page got the piped bytes, the pages around it their image contents');
  assert.equal(p.total, 64 * 256);
  // Served and let go: no tracer, no userfaultfd in the task, the command waits for it as its parent.
  await waitFor('the server to let the root go', () => tracer(fx.pid) === 0, 60000);
  assert.equal(hasUffd(fx.pid), false);
  tryKill(fx.pid, abi.SIG.SIGTERM);
  assert.equal(await exited, 0, `the command exits with the fixture's status; log:\n${fx.log()}\n${stderr}`);
  assert.match(fx.log(), /^CHILD PASS$/m);
  assert.match(fx.log(), /^PASS$/m);
});

test('restore -d --lazy-pages: the command returns, pages are missing while the tree answers, the detached server exits once all are in', async () => {
  const { fx, dir, child } = await dumped('detached');
  const hold = path.join(root, 'hold-detached');
  const { pid, r } = restoreDetached(dir, ['--lazy-pages'], { STASIS_LAZY_HOLD: hold });
  fx.restored();
  assert.equal(pid, fx.pid);
  const server = serverOf(r.stderr);
  // Streaming held: only what the tree touched is in.
  const p = await probe(fx);
  assert.equal(p.read, 'ok');
  assert.ok(p.resident < p.total, `${p.resident} of ${p.total} pages in memory while held`);
  for (const x of [fx.pid, child]) {
    assert.equal(hasUffd(x), false, `no userfaultfd in ${x}: the server has the only copy`);
    assert.equal(tracer(x), server, `${x}'s leader is traced by the server (EXITKILL)`);
  }
  // Job control passes through the server's tracing: stopped (every thread), continued, answering again.
  tryKill(fx.pid, abi.SIG.SIGSTOP);
  await waitFor('the threads to stop', () => fs.readdirSync(`/proc/${fx.pid}/task`).every((t) => /^[Tt]$/.test(taskState(fx.pid, t))), 10000);
  tryKill(fx.pid, abi.SIG.SIGCONT);
  assert.equal((await probe(fx)).read, 'ok', 'it runs again after SIGCONT');
  // While pages are missing: pages dropped (must read zero, not image data), a region moved
  // (its pages follow it), a fork whose child reads both (served through its own userfaultfd).
  tryKill(fx.pid, abi.SIG.SIGWINCH);
  await fx.waitLog(/^MUTATED fork=ok$/m, 30000);
  fs.writeFileSync(hold, '');
  const st = await reap(server, 60000);
  assert.deepEqual([st.kind, st.kind === 'exited' ? st.code : st.signal], ['exited', 0], 'the server exits 0 when every page is in');
  for (const x of [fx.pid, child]) {
    assert.equal(tracer(x), 0);
    assert.equal(hasUffd(x), false);
  }
  tryKill(fx.pid, abi.SIG.SIGUSR2);
  await fx.waitLog(/^SCAN ok$/m, 30000);
  const { status, log } = await fx.terminate();
  assert.match(log, /^CHILD PASS$/m, log);
  assert.match(log, /^PASS$/m, log);
  assert.deepEqual([status.kind, status.kind === 'exited' ? status.code : -1], ['exited', 0]);
});

test('a killed lazy-pages server takes the restored tree with it (no process runs on with zero pages)', async () => {
  const { fx, dir, child } = await dumped('killed');
  const hold = path.join(root, 'hold-killed');
  const { r } = restoreDetached(dir, ['--lazy-pages'], { STASIS_LAZY_HOLD: hold });
  fx.restored();
  const server = serverOf(r.stderr);
  assert.equal((await probe(fx)).read, 'ok');
  tryKill(fx.pid, abi.SIG.SIGUSR2); // a thread reading all of the main region, faulting as it goes
  tryKill(server, abi.SIG.SIGKILL);
  const s = await reap(server, 10000);
  assert.equal(s.kind, 'signaled');
  const st = await fx.reap(10000);
  assert.deepEqual([st.kind, st.kind === 'signaled' ? st.signal : -1], ['signaled', abi.SIG.SIGKILL], 'the restored root is killed');
  // Its child was adopted by us (the subreaper) and killed too.
  const cs = await reap(child, 10000);
  assert.deepEqual([cs.kind, cs.kind === 'signaled' ? cs.signal : -1], ['signaled', abi.SIG.SIGKILL], 'the restored child is killed');
  assert.doesNotMatch(fx.log(), /SCAN bad|^FAIL|^PASS/m, 'nothing ran on zero pages');
});

test('a lazy-pages server that cannot read its images kills the restored tree', async () => {
  const { fx, dir, child } = await dumped('bad-image');
  const hold = path.join(root, 'hold-bad-image');
  const { r } = restoreDetached(dir, ['--lazy-pages'], { STASIS_LAZY_HOLD: hold });
  fx.restored();
  const server = serverOf(r.stderr);
  assert.equal((await probe(fx)).read, 'ok');
  // The pages files lose their contents under the server (same inode: its open fds see it).
  for (const f of fs.readdirSync(dir).filter((n) => /^pages-\d+\.img$/.test(n))) fs.truncateSync(path.join(dir, f), 0);
  fs.writeFileSync(hold, '');
  const s = await reap(server, 30000);
  assert.deepEqual([s.kind, s.kind === 'exited' ? s.code : -1], ['exited', 1], 'the server fails');
  const st = await fx.reap(10000);
  assert.deepEqual([st.kind, st.kind === 'signaled' ? st.signal : -1], ['signaled', abi.SIG.SIGKILL], 'the restored root is killed');
  const cs = await reap(child, 10000);
  assert.deepEqual([cs.kind, cs.kind === 'signaled' ? cs.signal : -1], ['signaled', abi.SIG.SIGKILL], 'the restored child is killed');
  assert.doesNotMatch(fx.log(), /^FAIL|^PASS/m);
});

test('a damaged page chunk: the tree runs (other images checked up front), the server refuses the chunk before copying any of it and kills the tree', async () => {
  const { fx, dir, child } = await dumped('bad-chunk');
  // One byte in the middle of the largest pages file: the main region, untouched until streamed.
  const pages = fs.readdirSync(dir).filter((n) => /^pages-\d+\.img$/.test(n)).map((n) => path.join(dir, n)).sort((a, b) => fs.statSync(b).size - fs.statSync(a).size)[0];
  const at = Math.floor(fs.statSync(pages).size / 2) + 12345;
  const fd = fs.openSync(pages, 'r+');
  try {
    const b = Buffer.alloc(1);
    fs.readSync(fd, b, 0, 1, at);
    b[0] ^= 0x01;
    fs.writeSync(fd, b, 0, 1, at);
  } finally { fs.closeSync(fd); }
  // An eager restore refuses it before anything is created.
  const eager = runStasis(['restore', '-D', dir, '-d']);
  assert.equal(eager.status, 1, describeCli(eager));
  assert.match(eager.stderr, new RegExp(`^stasis: ${pages.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: contents do not match their CRC-32 in .*stasis-digest \\(chunk \\d+, bytes \\d+ to \\d+\\): the checkpoint is damaged`, 'm'));
  assert.ok(!fs.existsSync(`/proc/${fx.pid}`), 'nothing created');
  const hold = path.join(root, 'hold-bad-chunk');
  const logFile = path.join(root, 'bad-chunk.log');
  const { r } = restoreDetached(dir, ['--lazy-pages', '-o', logFile, '-v4'], { STASIS_LAZY_HOLD: hold });
  fx.restored();
  const server = serverOf(r.stderr);
  assert.equal((await probe(fx)).read, 'ok', 'the tree runs before the damaged chunk is read');
  fs.writeFileSync(hold, '');
  const s = await reap(server, 60000);
  assert.deepEqual([s.kind, s.kind === 'exited' ? s.code : -1], ['exited', 1], 'the server fails');
  const st = await fx.reap(10000);
  assert.deepEqual([st.kind, st.kind === 'signaled' ? st.signal : -1], ['signaled', abi.SIG.SIGKILL], 'the restored root is killed');
  const cs = await reap(child, 10000);
  assert.deepEqual([cs.kind, cs.kind === 'signaled' ? cs.signal : -1], ['signaled', abi.SIG.SIGKILL], 'the restored child is killed');
  assert.doesNotMatch(fx.log(), /^FAIL|^PASS/m);
  assert.match(fs.readFileSync(logFile, 'utf8'), /contents do not match their CRC-32 in .*\(chunk \d+, bytes \d+ to \d+\): the checkpoint is damaged/);
});
