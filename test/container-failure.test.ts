// Failures of a container's checkpoint at each step that is about containers
// (namespaces, mounts, network, IPC, time, cgroups, seccomp, credentials):
// a dump that fails or whose dumper is killed there leaves the runc container
// running, untraced, counting; a restore that fails or is killed there leaves
// nothing behind (no process, no cgroup it made), and the checkpoint still
// restores afterwards.
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  initHarness, runStasis, describeCli, tmpDir, waitGone, waitFor, reap, reapZombies, descendantsOf, tracerPid, procState, makeBundle, containerId, runDetached, runcDelete, removeCgroups, cgroupDirsOf, counterArgs, countIn,
} from './harness';
import { tryKill, abi } from '../src/sys';
import { dumpPhases } from '../src/dump/dump';
import { restorePhases } from '../src/restore/restore';

/** The units that are about containers: their phases are the failure points here. */
const CONTAINER_UNITS = new Set(['namespaces', 'uts', 'time', 'ipc', 'mnt', 'net', 'cgroup', 'seccomp', 'creds', 'sched', 'task-misc']);
const DUMP_POINTS = dumpPhases().filter((p) => p.unit && CONTAINER_UNITS.has(p.unit.name)).map((p) => p.name);
const RESTORE_POINTS = (() => {
  const p = restorePhases();
  return ['stub', ...p.stub.map((x) => x.name), 'clone', ...p.root.map((x) => x.name),
    ...p.tree.filter((x) => CONTAINER_UNITS.has(x.unit.name)).map((x) => x.name)];
})();

let root: string;
let data: string;
let id: string;
let pid = 0;
let images: string;
let n = 0;

const count = (): number => countIn(data);
async function counting(what: string): Promise<void> {
  const c = count();
  await waitFor(`${what}: still counting`, () => count() > c, 10000);
}

before(async () => {
  initHarness();
  root = tmpDir('ctrfail');
  data = path.join(root, 'data');
  fs.mkdirSync(data);
  const bundle = makeBundle(path.join(root, 'bundle'), { args: counterArgs(0.1), binds: { '/data': data } });
  id = containerId('fail');
  pid = runDetached(bundle, id);
  await waitFor('the container counting', () => fs.existsSync(path.join(data, 'count')) && count() >= 2, 20000);
});

after(async () => {
  for (const p of descendantsOf()) tryKill(p, abi.SIG.SIGKILL);
  reapZombies();
  runcDelete(id);
  removeCgroups(id);
  fs.rmSync(root, { recursive: true, force: true });
});

test('the failure points cover the container units, dump and restore', () => {
  for (const p of ['namespaces', 'mnt-scan', 'net', 'ipc', 'mnt', 'seccomp']) assert.ok(DUMP_POINTS.includes(p), `dump ${p}`);
  for (const p of ['namespaces', 'net', 'uts', 'ipc', 'mnt', 'creds', 'seccomp']) assert.ok(RESTORE_POINTS.includes(p), `restore ${p}`);
});

for (const step of DUMP_POINTS) {
  for (const how of ['', ':kill']) {
    test(`dump with STASIS_FAIL_AT=${step}${how}: the container goes on, untraced`, async () => {
      const r = runStasis(['dump', '-t', String(pid), '-D', path.join(root, `d${n++}`)], { STASIS_FAIL_AT: step + how });
      if (how) assert.equal(r.signal, 'SIGKILL', describeCli(r));
      else {
        assert.equal(r.status, 1, describeCli(r));
        assert.match(r.stderr.trim(), new RegExp(`^stasis: .*\\b${step}\\b`));
        assert.equal(r.stderr.trim().split('\n').length, 1);
      }
      await waitFor(`${step}: TracerPid 0`, () => tracerPid(pid) === 0, 5000);
      assert.doesNotMatch(procState(pid), /^[tT]$/);
      await counting(step + how);
    });
  }
}

test('the container is checkpointed (killed), runc forgets it', async () => {
  images = path.join(root, 'images');
  const r = runStasis(['dump', '-t', String(pid), '-D', images]);
  assert.equal(r.status, 0, describeCli(r));
  await waitGone([pid], 10000);
  reapZombies();
  runcDelete(id);
  await waitFor('runc removed its cgroups', () => cgroupDirsOf(id).length === 0 || (removeCgroups(id), false), 5000);
});

/** No process of the restore left; and no cgroup, unless it was killed (its cgroups may stay, as criu's soft mode uses them next time). */
async function assertNothingLeft(what: string, cgroupsToo: boolean): Promise<void> {
  await waitFor(`${what}: nothing left`, () => { reapZombies(); return descendantsOf().length === 0; }, 5000).catch(() => {
    for (const p of descendantsOf()) tryKill(p, abi.SIG.SIGKILL);
    throw new Error(`${what}: processes left behind`);
  });
  if (cgroupsToo) assert.deepEqual(cgroupDirsOf(id), [], `${what}: no cgroup left`);
}

for (const step of RESTORE_POINTS) {
  for (const how of ['', ':kill']) {
    test(`restore with STASIS_FAIL_AT=${step}${how}: nothing left`, async () => {
      const r = runStasis(['restore', '-D', images, '-d'], { STASIS_FAIL_AT: step + how });
      if (how) assert.equal(r.signal, 'SIGKILL', describeCli(r));
      else {
        assert.equal(r.status, 1, describeCli(r));
        assert.match(r.stderr.trim(), new RegExp(`^stasis: .*\\b${step}\\b`));
      }
      await assertNothingLeft(step + how, !how);
      if (how) removeCgroups(id); // a killed restorer's: ours to remove here
    });
  }
}

test('after every failure, the checkpoint restores and counts on', async () => {
  const r = runStasis(['restore', '-D', images, '-d', '--pidfile', 'init.pid']);
  assert.equal(r.status, 0, describeCli(r));
  const outer = Number(fs.readFileSync(path.join(images, 'init.pid'), 'utf8'));
  try {
    await counting('restored');
  } finally {
    tryKill(outer, abi.SIG.SIGKILL);
    await reap(outer, 10000);
    removeCgroups(id);
  }
});
