// runc with stasis as its criu (`runc --criu bin/criu`, and bin/criu first in
// PATH as `criu`, so Debian's /usr/sbin/criu is never run): a busybox
// container counting into a bind-mounted host directory, stdio /dev/null,
// checkpointed and restored (-d) — the count goes on from where it was;
// checkpointed with --leave-running — it goes on, and after it is deleted
// those images restore it as it was then; and a container on the host's
// network holding an established TCP connection with this test, checkpointed
// and restored with --tcp-established a second apart — the same connection
// answers. runc must be installed (.ci/run does): its absence fails these tests.
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import {
  initHarness, waitFor, waitGone, reapZombies, sleep, cmdline, CRIU, criuPathDir, criuEnv, makeBundle, runTool, describeRun, type RunResult,
} from './harness';

let root: string;
let env: NodeJS.ProcessEnv;
/** Unique per run: other sessions use runc on this machine too. */
const RUN = `${process.pid.toString(36)}${Date.now().toString(36)}`;
const ids: string[] = [];
let serial = 0;

before(() => {
  initHarness();
  root = fs.mkdtempSync('/var/tmp/stasis-runc-swrk-');
  env = criuEnv(criuPathDir(root));
  const v = runTool('runc', ['--version']);
  assert.equal(v.status, 0, describeRun('runc --version (runc must be installed)', v));
});

after(() => {
  for (const id of ids) runTool('runc', ['delete', '-f', id]);
  reapZombies();
  fs.rmSync(root, { recursive: true, force: true });
});

/** runc with our criu; its own log kept per call (its stdio may be the container's). */
function runc(args: string[], o: { cwd?: string; devNull?: boolean } = {}): RunResult & { log: string } {
  const log = path.join(root, `runc-${++serial}.log`);
  const r = runTool('runc', ['--log', log, '--criu', CRIU, ...args], { env, ...o });
  return { ...r, log: fs.existsSync(log) ? fs.readFileSync(log, 'utf8') : '' };
}

function ok(what: string, r: RunResult & { log: string }): void {
  assert.equal(r.status, 0, `${describeRun(what, r)}\nrunc log: ${r.log}`);
}

function newId(): string {
  const id = `swrk-${RUN}-${ids.length + 1}`;
  ids.push(id);
  return id;
}

function state(id: string): { status: string; pid: number } | undefined {
  const r = runTool('runc', ['state', id]);
  return r.status === 0 ? JSON.parse(r.stdout) : undefined;
}

// No child per tick (read -t on a FIFO, not sleep): the count is all the tree does.
const COUNTER = 'mkfifo /tmp/tick; exec 3<>/tmp/tick; i=0; while true; do i=$((i+1)); echo $i >> /data/log; read -t 0.1 x <&3; done';

/** The numbers the container wrote (each line whole: it appends one short line at a time). */
function counted(data: string): number[] {
  const text = fs.existsSync(path.join(data, 'log')) ? fs.readFileSync(path.join(data, 'log'), 'utf8') : '';
  return text.split('\n').filter((l, i, a) => l !== '' && i < a.length - 1).map(Number);
}

const waitCount = (data: string, n: number) => waitFor(`the container to count to ${n}`, () => counted(data).length >= n, 60000);

/** A counting container started with runc run -d, stdio /dev/null. */
async function counter(): Promise<{ id: string; bundle: string; data: string; pid: number }> {
  const id = newId();
  const data = path.join(root, `${id}-data`);
  fs.mkdirSync(data);
  const bundle = makeBundle(path.join(root, id), { args: ['sh', '-c', COUNTER], binds: { '/data': data }, writableRoot: true });
  ok('runc run -d', runc(['run', '-d', id], { cwd: bundle, devNull: true }));
  await waitCount(data, 3);
  return { id, bundle, data, pid: state(id)!.pid };
}

/** Dump and restore went through our criu (stasis's log in the work directory), never another. */
function ourLog(file: string, marker: string): string {
  const log = fs.readFileSync(file, 'utf8');
  assert.match(log, new RegExp(`criu swrk \\(stasis\\): ${marker}`));
  return log;
}

async function gone(pid: number): Promise<void> {
  await waitGone([pid], 30000);
}

test('runc checkpoint, then restore -d: the container counts on from where it was, into the same bind-mounted directory', async () => {
  const c = await counter();
  const img = path.join(root, `${c.id}-img`), work = path.join(root, `${c.id}-work`);
  ok('runc checkpoint', runc(['checkpoint', '--image-path', img, '--work-path', work, c.id]));
  ourLog(path.join(work, 'dump.log'), 'DUMP');
  assert.equal(state(c.id), undefined, 'runc destroyed the checkpointed container');
  await gone(c.pid);
  const atDump = counted(c.data).length;

  const work2 = path.join(root, `${c.id}-rwork`);
  ok('runc restore -d', runc(['restore', '-d', '--image-path', img, '--work-path', work2, c.id], { cwd: c.bundle, devNull: true }));
  const log = ourLog(path.join(work2, 'restore.log'), 'RESTORE');
  assert.match(log, /notify post-restore \(pid \d+\)/);
  const s = state(c.id)!;
  assert.equal(s.status, 'running');
  assert.match(cmdline(s.pid), /^sh -c mkfifo \/tmp\/tick; /);
  await waitCount(c.data, atDump + 3);
  // One count, never restarted, nothing skipped.
  const n = counted(c.data);
  assert.deepEqual(n, n.map((_, i) => i + 1));
  ok('runc delete -f', runc(['delete', '-f', c.id]));
  await gone(s.pid);
});

test('runc checkpoint --leave-running: the container goes on; deleted, it restores from those images as it was at the checkpoint', async () => {
  const c = await counter();
  const img = path.join(root, `${c.id}-img`), work = path.join(root, `${c.id}-work`);
  const before = counted(c.data).length;
  ok('runc checkpoint --leave-running', runc(['checkpoint', '--leave-running', '--image-path', img, '--work-path', work, c.id]));
  const afterCkpt = counted(c.data).length;
  ourLog(path.join(work, 'dump.log'), 'DUMP');
  assert.match(fs.readFileSync(path.join(work, 'dump.log'), 'utf8'), /notify network-unlock/);
  assert.deepEqual(state(c.id), { ...state(c.id)!, status: 'running', pid: c.pid });
  await waitCount(c.data, afterCkpt + 3);

  ok('runc delete -f', runc(['delete', '-f', c.id]));
  await gone(c.pid);
  const atDelete = counted(c.data).length;
  ok('runc restore -d', runc(['restore', '-d', '--image-path', img, '--work-path', path.join(root, `${c.id}-rwork`), c.id], { cwd: c.bundle, devNull: true }));
  const s = state(c.id)!;
  assert.equal(s.status, 'running');
  await waitCount(c.data, atDelete + 3);
  // The restored count picks up from its value at the checkpoint, written again after the rest.
  const n = counted(c.data);
  assert.deepEqual(n.slice(0, atDelete), n.slice(0, atDelete).map((_, i) => i + 1));
  const resumed = n[atDelete];
  assert.ok(resumed - 1 >= before && resumed - 1 <= afterCkpt, `restored at ${resumed - 1}, checkpointed between ${before} and ${afterCkpt}`);
  assert.deepEqual(n.slice(atDelete), n.slice(atDelete).map((_, i) => resumed + i));
  ok('runc delete -f', runc(['delete', '-f', c.id]));
  await gone(s.pid);
});

test('runc checkpoint --pre-dump, then checkpoint --parent-path: the final dump copies only what changed; restore -d counts on', async () => {
  const c = await counter();
  const pre = path.join(root, `${c.id}-pre`), img = path.join(root, `${c.id}-img`);
  ok('runc checkpoint --pre-dump', runc(['checkpoint', '--pre-dump', '--image-path', pre, '--work-path', pre, c.id]));
  ourLog(path.join(pre, 'dump.log'), 'PRE_DUMP');
  assert.equal(state(c.id)?.status, 'running', 'a pre-dump leaves the container running');
  const afterPre = counted(c.data).length;
  await waitCount(c.data, afterPre + 3);
  ok('runc checkpoint --parent-path', runc(['checkpoint', '--parent-path', `../${path.basename(pre)}`, '--image-path', img, '--work-path', img, c.id]));
  ourLog(path.join(img, 'dump.log'), 'DUMP');
  assert.equal(fs.readlinkSync(path.join(img, 'parent')), `../${path.basename(pre)}`, "criu's parent link");
  const pagesIn = (dir: string) => fs.readdirSync(dir).filter((f) => /^pages-\d+\.img$/.test(f)).reduce((a, f) => a + fs.statSync(path.join(dir, f)).size, 0);
  assert.ok(pagesIn(img) < pagesIn(pre), `the final dump holds fewer pages (${pagesIn(img)} bytes) than the pre-dump (${pagesIn(pre)})`);
  await gone(c.pid);
  const atDump = counted(c.data).length;
  ok('runc restore -d', runc(['restore', '-d', '--image-path', img, '--work-path', path.join(root, `${c.id}-rwork`), c.id], { cwd: c.bundle, devNull: true }));
  const s = state(c.id)!;
  assert.equal(s.status, 'running');
  await waitCount(c.data, atDump + 3);
  const n = counted(c.data);
  assert.deepEqual(n, n.map((_, i) => i + 1), 'one count, never restarted, nothing skipped');
  ok('runc delete -f', runc(['delete', '-f', c.id]));
  await gone(s.pid);
});

/** A line-oriented view of a client socket: every byte received, and whether it ended. */
function watch(sock: net.Socket): { data: () => string; ended: () => string | undefined } {
  let data = '';
  let ended: string | undefined;
  sock.setEncoding('utf8');
  sock.on('data', (d) => { data += d; });
  sock.on('end', () => { ended ??= 'end of stream'; });
  sock.on('error', (e) => { ended ??= e.message; });
  sock.on('close', () => { ended ??= 'closed'; });
  return { data: () => data, ended: () => ended };
}

test('runc checkpoint --tcp-established on the host network, 1 s down, restore --tcp-established: the same connection answers on', async () => {
  const id = newId();
  const port = 20000 + (process.pid % 20000) + Math.floor(Math.random() * 5000);
  const bundle = makeBundle(path.join(root, id), { args: ['sh', '-c', `exec nc -l -p ${port} -e cat`], hostNetwork: true, writableRoot: true });
  ok('runc run -d', runc(['run', '-d', id], { cwd: bundle, devNull: true }));
  const sock = await pollConnect(port);
  const w = watch(sock);
  sock.write('one\n');
  await waitFor('the echo of one', () => w.data() === 'one\n', 30000);

  const img = path.join(root, `${id}-img`), work = path.join(root, `${id}-work`);
  const pid = state(id)!.pid;
  ok('runc checkpoint --tcp-established', runc(['checkpoint', '--tcp-established', '--image-path', img, '--work-path', work, id]));
  ourLog(path.join(work, 'dump.log'), 'DUMP');
  await gone(pid);
  // The scenario's downtime (not a wait for anything): the peer keeps its end meanwhile.
  await sleep(1000);
  assert.equal(w.ended(), undefined, 'the connection survived the checkpoint');

  ok('runc restore -d --tcp-established', runc(['restore', '-d', '--tcp-established', '--image-path', img, '--work-path', path.join(root, `${id}-rwork`), id], { cwd: bundle, devNull: true }));
  const s = state(id)!;
  assert.equal(s.status, 'running');
  sock.write('two\n');
  await waitFor('the echo of two on the same connection', () => w.data() === 'one\ntwo\n', 30000);
  assert.equal(w.ended(), undefined);
  sock.destroy();
  ok('runc delete -f', runc(['delete', '-f', id]));
  await gone(s.pid);
});

/** Connect, retrying until the container listens. */
async function pollConnect(port: number): Promise<net.Socket> {
  const end = Date.now() + 60000;
  for (;;) {
    const s = await new Promise<net.Socket | undefined>((resolve) => {
      const c = net.connect(port, '127.0.0.1');
      c.once('connect', () => { c.removeAllListeners('error'); resolve(c); });
      c.once('error', () => { c.destroy(); resolve(undefined); });
    });
    if (s) return s;
    if (Date.now() > end) throw new Error(`nothing listens on port ${port}`);
    await sleep(50);
  }
}
