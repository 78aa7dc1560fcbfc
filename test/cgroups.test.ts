// Cgroups: each task back in its cgroups (v1 and v2), missing ones made again
// with their limits (--manage-cgroups soft, the default) or refused (none);
// a cgroup namespace rooted where it was.
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Fixture, initHarness, runStasis, describeCli, tmpDir, restoreDetached, waitGone, reap, reapZombies } from './harness';
import { tryKill, abi } from '../src/sys';
import { hierarchyMount } from '../src/resources/ns/cgroup';

let root: string;
before(() => { initHarness(); root = tmpDir('cg'); });
after(() => fs.rmSync(root, { recursive: true, force: true }));

const V2 = hierarchyMount('');
const PIDS = hierarchyMount('pids');

function cgroupOf(pid: number, name: string): string {
  return fs.readFileSync(`/proc/${pid}/cgroup`, 'utf8').split('\n').find((l) => l.split(':')[1] === name)!.split(':').slice(2).join(':');
}

test('a process in a v2 cgroup and a v1 pids cgroup with a limit: both made again with the limit after they were removed', async () => {
  assert.ok(V2 && PIDS, 'cgroup2 and a v1 pids hierarchy are mounted here');
  const fx = await Fixture.start('counter');
  const name = `stasis-test-${fx.pid}`;
  const v2 = path.join(V2, name), pids = path.join(PIDS, name);
  try {
    fs.mkdirSync(v2);
    fs.mkdirSync(pids);
    fs.writeFileSync(path.join(pids, 'pids.max'), '77');
    fs.writeFileSync(path.join(v2, 'cgroup.procs'), String(fx.pid));
    fs.writeFileSync(path.join(pids, 'cgroup.procs'), String(fx.pid));
    const dir = path.join(root, 'images');
    const d = runStasis(['dump', '-t', String(fx.pid), '-D', dir]);
    assert.equal(d.status, 0, describeCli(d));
    await fx.reap();
    await waitGone([fx.pid]);
    fs.rmdirSync(v2);
    fs.rmdirSync(pids);
    const none = runStasis(['restore', '-D', dir, '-d', '--manage-cgroups', 'none']);
    assert.equal(none.status, 1, describeCli(none));
    assert.match(none.stderr, /cgroup .* does not exist \(--manage-cgroups none creates none\)/);
    assert.ok(!fs.existsSync(`/proc/${fx.pid}`), 'nothing left running');
    restoreDetached(dir);
    fx.restored();
    assert.equal(cgroupOf(fx.pid, ''), `/${name}`);
    assert.equal(cgroupOf(fx.pid, 'pids'), `/${name}`);
    assert.equal(fs.readFileSync(path.join(pids, 'pids.max'), 'utf8').trim(), '77', 'the limit, made again');
    await fx.assertCounting();
  } finally {
    await fx.kill();
    for (const d of [v2, pids]) try { fs.rmdirSync(d); } catch { /* gone */ }
  }
});

test('a cgroup namespace of its own, rooted at its cgroup', async () => {
  assert.ok(V2);
  const name = `stasis-test-cgns-${process.pid}`;
  const v2 = path.join(V2, name);
  fs.mkdirSync(v2);
  const fx = await Fixture.start('nsinit', { args: ['pid,cgroup'], env: { STASIS_CGROUPS: path.join(v2, 'cgroup.procs') } });
  let outer = 0;
  try {
    const init = Number(/^CHILD (\d+)$/m.exec(fx.log())![1]);
    await fx.waitLog(/^INIT_READY$/m);
    const dir = path.join(root, 'cgns');
    const d = runStasis(['dump', '-t', String(init), '-D', dir]);
    assert.equal(d.status, 0, describeCli(d));
    await waitGone([init]);
    const r = runStasis(['restore', '-D', dir, '-d', '--pidfile', 'p']);
    assert.equal(r.status, 0, describeCli(r));
    outer = Number(fs.readFileSync(path.join(dir, 'p'), 'utf8'));
    assert.equal(cgroupOf(outer, ''), `/${name}`, 'in its cgroup');
    assert.notEqual(fs.readlinkSync(`/proc/${outer}/ns/cgroup`), fs.readlinkSync('/proc/self/ns/cgroup'));
    tryKill(outer, abi.SIG.SIGTERM);
    assert.deepEqual(await reap(outer, 10000), { kind: 'exited', pid: outer, code: 0 }, fx.log());
    outer = 0;
  } finally {
    if (outer) tryKill(outer, abi.SIG.SIGKILL);
    await fx.kill();
    reapZombies();
    try { fs.rmdirSync(v2); } catch { /* busy or gone */ }
  }
});

test('empty cgroups below a process\'s (v2 and v1 pids, one with a limit) are made again after they were removed', async () => {
  assert.ok(V2 && PIDS);
  const fx = await Fixture.start('counter');
  const name = `stasis-test-sub-${fx.pid}`;
  const v2 = path.join(V2, name), pids = path.join(PIDS, name);
  const below = [path.join(v2, 'empty.0'), path.join(v2, 'empty.1'), path.join(v2, 'empty.1', 'deeper'), path.join(pids, 'limited')];
  try {
    for (const d of [v2, pids, ...below]) fs.mkdirSync(d);
    fs.writeFileSync(path.join(pids, 'limited', 'pids.max'), '33');
    fs.writeFileSync(path.join(v2, 'cgroup.procs'), String(fx.pid));
    fs.writeFileSync(path.join(pids, 'cgroup.procs'), String(fx.pid));
    const dir = path.join(root, 'below');
    const d = runStasis(['dump', '-t', String(fx.pid), '-D', dir]);
    assert.equal(d.status, 0, describeCli(d));
    await fx.reap();
    await waitGone([fx.pid]);
    for (const p of [...below].reverse()) fs.rmdirSync(p);
    restoreDetached(dir);
    fx.restored();
    assert.equal(cgroupOf(fx.pid, ''), `/${name}`);
    for (const p of below) assert.ok(fs.statSync(p).isDirectory(), `${p} made again`);
    assert.equal(fs.readFileSync(path.join(pids, 'limited', 'pids.max'), 'utf8').trim(), '33', 'its limit too');
    await fx.assertCounting();
  } finally {
    await fx.kill();
    for (const p of [...below].reverse().concat([v2, pids])) try { fs.rmdirSync(p); } catch { /* gone */ }
  }
});

test('a v1 devices cgroup\'s rules and the owner and mode of a cgroup\'s files, made again', async () => {
  const DEV = hierarchyMount('devices');
  assert.ok(DEV && PIDS, 'v1 devices and pids hierarchies are mounted here');
  const fx = await Fixture.start('counter');
  const name = `stasis-test-props-${fx.pid}`;
  const dev = path.join(DEV, name), pids = path.join(PIDS, name);
  const rules = ['c 1:3 rwm', 'c 1:5 rwm', 'c 1:9 r', 'c 136:* rw'];
  try {
    for (const d of [dev, pids]) fs.mkdirSync(d);
    fs.writeFileSync(path.join(dev, 'devices.deny'), 'a');
    for (const r of rules) fs.writeFileSync(path.join(dev, 'devices.allow'), r);
    for (const f of ['notify_on_release', 'cgroup.procs', 'tasks']) { fs.chownSync(path.join(pids, f), 1234, 1235); fs.chmodSync(path.join(pids, f), 0o666); }
    fs.writeFileSync(path.join(pids, 'notify_on_release'), '1');
    fs.chownSync(pids, 1234, 1235);
    for (const d of [dev, pids]) fs.writeFileSync(path.join(d, 'cgroup.procs'), String(fx.pid));
    const dir = path.join(root, 'props');
    const d = runStasis(['dump', '-t', String(fx.pid), '-D', dir]);
    assert.equal(d.status, 0, describeCli(d));
    await fx.reap();
    await waitGone([fx.pid]);
    for (const p of [dev, pids]) fs.rmdirSync(p);
    restoreDetached(dir);
    fx.restored();
    assert.equal(fs.readFileSync(path.join(dev, 'devices.list'), 'utf8'), rules.join('\n') + '\n');
    assert.equal(fs.readFileSync(path.join(pids, 'notify_on_release'), 'utf8'), '1\n');
    for (const f of ['notify_on_release', 'cgroup.procs', 'tasks', '.']) {
      const st = fs.statSync(path.join(pids, f));
      assert.deepEqual([st.uid, st.gid], [1234, 1235], f);
      if (f !== '.') assert.equal(st.mode & 0o777, 0o666, f);
    }
    await fx.assertCounting();
  } finally {
    await fx.kill();
    for (const p of [dev, pids]) try { fs.rmdirSync(p); } catch { /* gone */ }
  }
});
