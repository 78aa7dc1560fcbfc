// A runc container, checkpointed and restored with the plain CLI (no runc
// involved after it started it): a busybox shell counting into a host
// directory bound at /data, in its own pid, mount, UTS, IPC and network
// namespaces, with runc's capabilities, no_new_privs, masked /proc paths,
// read-only tmpfs, cgroups. The bind is dumped as external (criu's
// --external mnt[/data]:KEY) and restored from another host directory.
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import {
  initHarness, runStasis, describeCli, tmpDir, waitGone, waitFor, reap, reapZombies, procStatus, makeBundle, containerId, runDetached, runcStatus, runcDelete, removeCgroups, counterArgs, countIn,
} from './harness';
import { tryKill, abi } from '../src/sys';

let root: string;
const ids: string[] = [];
const restored: number[] = [];

before(() => { initHarness(); root = tmpDir('runc'); });
after(async () => {
  for (const pid of restored) { tryKill(pid, abi.SIG.SIGKILL); await reap(pid, 5000).catch(() => undefined); }
  for (const id of ids) { runcDelete(id); removeCgroups(id); }
  reapZombies();
  fs.rmSync(root, { recursive: true, force: true });
});

const status = (pid: number) => procStatus(pid);

/**
 * A process's mounts as it sees them, in order, without what differs between
 * two equal trees (mount ids, device numbers of anonymous filesystems):
 * root, mountpoint, mount options, propagation, type, source, superblock options.
 */
function mounts(pid: number): string[] {
  return fs.readFileSync(`/proc/${pid}/mountinfo`, 'utf8').split('\n').filter(Boolean).map((line) => {
    const [a, b] = line.split(' - ');
    const f = a.split(' ');
    return [f[3], f[4], f[5], f.slice(6).join(' ').replace(/:\d+/g, ''), b].join(' ');
  });
}

test('runc busybox container counting into a bind-mounted host dir: dump, restore from another dir with --external, the count goes on', async () => {
  const data = path.join(root, 'data');
  const moved = path.join(root, 'data-moved');
  fs.mkdirSync(data);
  const bundle = makeBundle(path.join(root, 'bundle'), { args: counterArgs(0.2), binds: { '/data': data }, hostname: 'stasis-runc' });
  const id = containerId('count');
  ids.push(id);
  const pid = runDetached(bundle, id);
  await waitFor('the container counting', () => fs.existsSync(path.join(data, 'count')) && countIn(data) >= 2, 20000);
  const before = status(pid);
  const mountsAtDump = mounts(pid);
  assert.ok(mountsAtDump.some((m) => /^\/null \/proc\/keys /.test(m)), 'runc masked /proc/keys');
  assert.match(before.get('NSpid')!, /\s1$/, 'pid 1 of its own pid namespace');

  const images = path.join(root, 'images');
  const d = runStasis(['dump', '-t', String(pid), '-D', images, '--external', 'mnt[/data]:data']);
  assert.equal(d.status, 0, describeCli(d));
  await waitGone([pid], 10000);
  reapZombies();
  assert.equal(runcStatus(id), 'stopped', 'runc sees its container gone');
  // The checkpoint moves with its data: the counter's directory elsewhere now.
  const atDump = countIn(data);
  fs.renameSync(data, moved);
  runcDelete(id); // runc removes the container's cgroups: the restore makes them again

  const r = runStasis(['restore', '-D', images, '-d', '--pidfile', 'init.pid', '--external', `mnt[data]:${moved}`]);
  assert.equal(r.status, 0, describeCli(r));
  const outer = Number(fs.readFileSync(path.join(images, 'init.pid'), 'utf8'));
  restored.push(outer);
  await waitFor('the count going on from where it was', () => countIn(moved) >= atDump + 3, 20000);
  assert.ok(countIn(moved) > atDump);

  const now = status(outer);
  assert.match(now.get('NSpid')!, new RegExp(`^${outer}\\s+1$`), 'pid 1 of a new pid namespace');
  for (const k of ['CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb', 'NoNewPrivs', 'Uid', 'Gid', 'Groups', 'Seccomp']) {
    assert.equal(now.get(k), before.get(k), `${k} as runc set it`);
  }
  const hostname = spawnSync('nsenter', ['-t', String(outer), '-u', 'hostname'], { encoding: 'utf8' }).stdout.trim();
  assert.equal(hostname, 'stasis-runc');
  for (const ns of ['pid', 'mnt', 'uts', 'ipc', 'net']) {
    assert.notEqual(fs.readlinkSync(`/proc/${outer}/ns/${ns}`), fs.readlinkSync(`/proc/self/ns/${ns}`), `a ${ns} namespace of its own`);
  }
  // Every mount as runc made it (masked and read-only paths, tmpfs, cgroups, devpts...),
  // /data now the directory given to --external.
  // (The order of creation may differ: parents and bind sources come first on restore.)
  assert.deepEqual(mounts(outer).sort(), mountsAtDump.map((m) => m.replace(`${data} /data `, `${moved} /data `)).sort());
  assert.equal(fs.statSync(`/proc/${outer}/root/data`).ino, fs.statSync(moved).ino, '/data is the directory given to --external');
  assert.equal(fs.readFileSync(`/proc/${outer}/root/proc/keys`, 'utf8'), '', '/proc/keys masked by /dev/null');

  tryKill(outer, abi.SIG.SIGKILL);
  await reap(outer, 10000);
  restored.pop();
});

test('a container dumped with -R keeps counting; its checkpoint restores after it is gone', async () => {
  const data = path.join(root, 'data-r');
  fs.mkdirSync(data);
  const bundle = makeBundle(path.join(root, 'bundle-r'), { args: counterArgs(0.2), binds: { '/data': data } });
  const id = containerId('leave');
  ids.push(id);
  const pid = runDetached(bundle, id);
  await waitFor('the container counting', () => fs.existsSync(path.join(data, 'count')) && countIn(data) >= 2, 20000);
  const images = path.join(root, 'images-r');
  const d = runStasis(['dump', '-t', String(pid), '-D', images, '-R']);
  assert.equal(d.status, 0, describeCli(d));
  const n = countIn(data);
  await waitFor('still counting after the dump', () => countIn(data) >= n + 2, 20000);
  assert.equal(runcStatus(id), 'running');
  runcDelete(id);
  await waitGone([pid], 10000);
  reapZombies();

  // Dumped without --external: /data is a bind of a host directory restored from the same path.
  const r = runStasis(['restore', '-D', images, '-d', '--pidfile', 'init.pid']);
  assert.equal(r.status, 0, describeCli(r));
  const outer = Number(fs.readFileSync(path.join(images, 'init.pid'), 'utf8'));
  restored.push(outer);
  const m = countIn(data);
  await waitFor('the restored one counting', () => countIn(data) >= m + 2, 20000);
  tryKill(outer, abi.SIG.SIGKILL);
  await reap(outer, 10000);
  restored.pop();
});
