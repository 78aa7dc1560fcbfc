// podman with stasis as its criu (bin/criu first in podman's PATH as `criu`;
// podman hands its PATH to runc and, through conmon, to runc restore, so
// Debian's /usr/sbin/criu is never what they run). An image made from a
// busybox rootfs with `podman import`; a container counting into a bind-mounted
// host directory and on its stdout (a pipe to conmon), checkpointed and
// restored in place, then exported to an archive and restored from it as a new
// container (the flow Kubernetes' checkpoint API uses to move containers). On
// podman's default bridge network the container's network namespace is
// podman's (external to the checkpoint): the restored container is put into
// the one podman hands over. With --network none it is the container's own
// (carried), and --leave-running keeps it going.
// podman must be installed (.ci/run does): its absence fails these tests.
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { initHarness, waitFor, reapZombies, criuPathDir, criuEnv, busyboxRootfs, runTool, describeRun, type RunResult } from './harness';

let root: string;
let env: NodeJS.ProcessEnv;
/** Unique per run: other sessions use podman on this machine too. */
const RUN = `${process.pid.toString(36)}${Date.now().toString(36)}`;
const IMAGE = `localhost/stasis-swrk-${RUN}:latest`;
const names: string[] = [];

function podman(args: string[]): RunResult {
  return runTool('podman', args, { env, timeoutMs: 180000 });
}

function ok(what: string, r: RunResult): RunResult {
  assert.equal(r.status, 0, describeRun(what, r));
  return r;
}

before(() => {
  initHarness();
  root = fs.mkdtempSync('/var/tmp/stasis-podman-swrk-');
  env = criuEnv(criuPathDir(root));
  ok('podman --version (podman must be installed)', podman(['--version']));
  const rootfs = busyboxRootfs(path.join(root, 'rootfs'));
  const tar = path.join(root, 'rootfs.tar');
  ok('tar', runTool('tar', ['-C', rootfs, '-cf', tar, '.']));
  ok('podman import', podman(['import', '--change', 'CMD ["sh"]', tar, IMAGE]));
});

after(() => {
  if (names.length) podman(['rm', '-f', '-t', '0', ...names]);
  podman(['rmi', '-f', IMAGE]);
  reapZombies();
  fs.rmSync(root, { recursive: true, force: true });
});

function newName(): string {
  const n = `swrk-${RUN}-${names.length + 1}`;
  names.push(n);
  return n;
}

function inspect(name: string, format: string): string {
  return ok(`podman inspect ${name}`, podman(['inspect', '-f', format, name])).stdout.trim();
}

// No child per tick (read -t on a FIFO, not sleep): the count is all the tree does.
const COUNTER = 'mkfifo /tmp/tick; exec 3<>/tmp/tick; i=0; while true; do i=$((i+1)); echo $i >> /data/log; echo tick $i; read -t 0.1 x <&3; done';

function counted(data: string): number[] {
  const text = fs.existsSync(path.join(data, 'log')) ? fs.readFileSync(path.join(data, 'log'), 'utf8') : '';
  return text.split('\n').filter((l, i, a) => l !== '' && i < a.length - 1).map(Number);
}

const waitCount = (data: string, n: number) => waitFor(`the container to count to ${n}`, () => counted(data).length >= n, 60000);
const consecutive = (n: number[]) => n.map((_, i) => i + 1);

/** What the container printed (podman logs: its stdout, a pipe to conmon), as numbers. */
function ticks(name: string): number[] {
  return ok('podman logs', podman(['logs', name])).stdout.split('\n').filter((l) => l.startsWith('tick ')).map((l) => Number(l.slice(5)));
}

async function counter(network = 'bridge'): Promise<{ name: string; data: string }> {
  const name = newName();
  const data = path.join(root, `${name}-data`);
  fs.mkdirSync(data);
  ok('podman run -d', podman(['run', '-d', '--name', name, '--network', network, '--ulimit', 'nofile=1024:1024', '--ulimit', 'nproc=1024:1024',
    '-v', `${data}:/data`, IMAGE, 'sh', '-c', COUNTER]));
  await waitCount(data, 3);
  return { name, data };
}

/** The running container's init is in the network namespace podman made for it (and shows podman's address there). */
function inPodmanNetns(name: string): void {
  const pid = Number(inspect(name, '{{.State.Pid}}'));
  const sandbox = inspect(name, '{{.NetworkSettings.SandboxKey}}');
  assert.equal(fs.statSync(`/proc/${pid}/ns/net`).ino, fs.statSync(sandbox).ino, `${name}: init ${pid} in ${sandbox}`);
  const ip = inspect(name, '{{.NetworkSettings.IPAddress}}');
  assert.match(ip, /^\d+\.\d+\.\d+\.\d+$/);
  assert.ok(fs.readFileSync(`/proc/${pid}/net/fib_trie`, 'utf8').includes(ip), `${ip} in the init's network namespace`);
}

function ourLog(file: string, marker: string): void {
  assert.match(fs.readFileSync(file, 'utf8'), new RegExp(`criu swrk \\(stasis\\): ${marker}`));
}

test('podman container checkpoint, then restore: the container counts on, in the bind-mounted dir and on its stdout, in podman\'s network namespace', async () => {
  const c = await counter();
  const userdata = inspect(c.name, '{{.StaticDir}}');
  ok('podman container checkpoint', podman(['container', 'checkpoint', '--keep', c.name]));
  assert.equal(inspect(c.name, '{{.State.Status}}'), 'exited');
  ourLog(path.join(userdata, 'dump.log'), 'DUMP');
  const atDump = counted(c.data).length;

  const r = ok('podman container restore', podman(['container', 'restore', '--keep', '--print-stats', c.name]));
  ourLog(path.join(userdata, 'restore.log'), 'RESTORE');
  assert.equal(inspect(c.name, '{{.State.Status}}'), 'running');
  inPodmanNetns(c.name);
  // Our stats-restore, read by podman.
  const stats = JSON.parse(r.stdout).container_statistics[0].criu_statistics;
  assert.ok(stats.restore_time > 0, JSON.stringify(stats));
  await waitCount(c.data, atDump + 3);
  const n = counted(c.data);
  assert.deepEqual(n, consecutive(n));
  // Its stdout is conmon's new pipe: the ticks go on there too, none lost or repeated.
  await waitFor('ticks after the restore in podman logs', () => ticks(c.name).length > atDump, 60000);
  const t = ticks(c.name);
  assert.deepEqual(t, consecutive(t));
  ok('podman rm -f', podman(['rm', '-f', '-t', '0', c.name]));
});

test('podman container checkpoint --export, restore --import --name: a new container counts on from the archive', async () => {
  const c = await counter();
  const archive = path.join(root, `${c.name}.tar.gz`);
  ok('podman container checkpoint --export', podman(['container', 'checkpoint', '--export', archive, c.name]));
  assert.equal(inspect(c.name, '{{.State.Status}}'), 'exited');
  const atDump = counted(c.data).length;
  // podman's archive: zstd whatever the name; the images, their digest, and our stats-dump.
  const list = ok('tar -t', runTool('tar', ['--zstd', '-tf', archive])).stdout.split('\n');
  for (const f of ['checkpoint/inventory.img', 'checkpoint/pstree.img', 'checkpoint/stasis-digest', 'stats-dump', 'config.dump', 'spec.dump']) {
    assert.ok(list.includes(f), `${f} in the archive: ${list.join(' ')}`);
  }

  const copy = newName();
  ok('podman container restore --import --name', podman(['container', 'restore', '--import', archive, '--name', copy]));
  assert.equal(inspect(copy, '{{.State.Status}}'), 'running');
  assert.notEqual(inspect(copy, '{{.Id}}'), inspect(c.name, '{{.Id}}'));
  inPodmanNetns(copy);
  await waitCount(c.data, atDump + 3);
  const n = counted(c.data);
  assert.deepEqual(n, consecutive(n));
  // The archive carries the container's log (ctr.log): the new one's goes on from it, on conmon's new pipe.
  await waitFor('the new container\'s ticks in podman logs', () => ticks(copy).length > atDump, 60000);
  const t = ticks(copy);
  assert.deepEqual(t, consecutive(t));
  ok('podman rm -f', podman(['rm', '-f', '-t', '0', copy, c.name]));
});

test('--network none (the container\'s own network namespace, carried): checkpoint --leave-running goes on; restored later from those images', async () => {
  const c = await counter('none');
  const before = counted(c.data).length;
  ok('podman container checkpoint --leave-running', podman(['container', 'checkpoint', '--leave-running', '--keep', c.name]));
  const afterCkpt = counted(c.data).length;
  assert.equal(inspect(c.name, '{{.State.Status}}'), 'running');
  await waitCount(c.data, afterCkpt + 3);
  ok('podman stop', podman(['stop', '-t', '0', c.name]));
  const atStop = counted(c.data).length;
  ok('podman container restore', podman(['container', 'restore', '--keep', c.name]));
  assert.equal(inspect(c.name, '{{.State.Status}}'), 'running');
  await waitCount(c.data, atStop + 3);
  // The count starts again from where it was at the checkpoint.
  const n = counted(c.data);
  assert.deepEqual(n.slice(0, atStop), consecutive(n.slice(0, atStop)));
  const resumed = n[atStop];
  assert.ok(resumed - 1 >= before && resumed - 1 <= afterCkpt, `restored at ${resumed - 1}, checkpointed between ${before} and ${afterCkpt}`);
  assert.deepEqual(n.slice(atStop), n.slice(atStop).map((_, i) => resumed + i));
  ok('podman rm -f', podman(['rm', '-f', '-t', '0', c.name]));
});
