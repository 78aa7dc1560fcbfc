// A network namespace that outlives the tree (a container runtime's, under
// /run/netns): dumped as external with criu's `--external net[INODE]:KEY`,
// restored into that same namespace with `--join-ns net:PATH` or `--inherit-fd
// fd[N]:KEY` (what runc passes criu). A restore naming neither is refused
// before anything is created; without --external the namespace is carried.
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { Fixture, initHarness, runStasis, describeCli, tmpDir, buildFixture, descendantsOf, reapZombies, STASIS } from './harness';
import { readImage } from '../src/images/image';
import * as stasis from '../src/index';

const NS = `stasis-ext-${process.pid}`;
const NS_PATH = `/run/netns/${NS}`;
let root: string;

before(() => {
  initHarness();
  root = tmpDir('netns-ext');
  const r = spawnSync('ip', ['netns', 'add', NS], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  // Something to tell it by: an address on its loopback.
  assert.equal(spawnSync('ip', ['-n', NS, 'addr', 'add', '127.0.0.7/8', 'dev', 'lo']).status, 0);
});
after(() => {
  spawnSync('ip', ['netns', 'delete', NS]);
  fs.rmSync(root, { recursive: true, force: true });
});

const netIno = (pid: number | 'self') => fs.readlinkSync(`/proc/${pid}/ns/net`);

/** A counter in the namespace (nsenter execs it: the fixture's pid is the counter's). */
async function startInNs(): Promise<Fixture> {
  const bin = buildFixture('counter');
  return Fixture.startCommand('counter', (dir) => ['nsenter', `--net=${NS_PATH}`, bin, dir]);
}

function inode(p: string): number {
  return fs.statSync(p).ino;
}

async function dumpExternal(name: string): Promise<{ fx: Fixture; dir: string }> {
  const fx = await startInNs();
  assert.equal(netIno(fx.pid), `net:[${inode(NS_PATH)}]`, 'the counter runs in the namespace');
  const dir = path.join(root, name);
  const d = runStasis(['dump', '-t', String(fx.pid), '-D', dir, '--external', `net[${inode(NS_PATH)}]:extnet`]);
  assert.equal(d.status, 0, describeCli(d));
  await fx.reap();
  const files = fs.readdirSync(dir);
  assert.deepEqual(files.filter((f) => /^(netdev|ifaddr|route|rule|nftables)-/.test(f)), [], 'nothing of the namespace carried');
  const nsid = readImage(dir, `ids-${fx.pid}.img`, 'IDS', 'task_kobj_ids_entry')[0].net_ns_id;
  const [netns] = readImage(dir, `netns-${nsid}.img`, 'NETNS', 'netns_entry');
  assert.equal(netns.ext_key, 'extnet');
  assert.deepEqual([netns.all_conf4, netns.def_conf4, netns.unix_conf], [[], [], []], 'only its key');
  return { fx, dir };
}

test('--external net[INODE]:KEY, restored with --join-ns net:PATH (through the library): the same namespace, the count goes on', async () => {
  const { fx, dir } = await dumpExternal('join');
  try {
    const r = await stasis.restore({ imagesDir: dir, joinNs: [`net:${NS_PATH}`] });
    assert.equal(r.pid, fx.pid);
    fx.restored();
    assert.equal(netIno(fx.pid), `net:[${inode(NS_PATH)}]`, 'in the namespace it was in');
    await fx.assertCounting();
    const { log } = await fx.terminate();
    assert.match(log, /^PASS$/m, log);
  } finally { await fx.kill(); }
});

test('restored with --inherit-fd fd[N]:KEY (the namespace handed over as fd N, as runc does)', async () => {
  const { fx, dir } = await dumpExternal('inherit');
  try {
    const ns = fs.openSync(NS_PATH, 'r');
    let r;
    try {
      r = spawnSync(process.execPath, [STASIS, 'restore', '-D', dir, '-d', '--inherit-fd', 'fd[3]:extnet'], { stdio: ['ignore', 'pipe', 'pipe', ns], encoding: 'utf8' });
    } finally { fs.closeSync(ns); }
    assert.equal(r.status, 0, r.stderr);
    fx.restored();
    assert.equal(netIno(fx.pid), `net:[${inode(NS_PATH)}]`);
    await fx.assertCounting();
    const { log } = await fx.terminate();
    assert.match(log, /^PASS$/m, log);
  } finally { await fx.kill(); }
});

test('an external namespace with neither option, a wrong key or a file that is no namespace: refused before anything is created', async () => {
  const { fx, dir } = await dumpExternal('refused');
  try {
    const cases: [string[], RegExp][] = [
      [[], /dumped as external \(key extnet\): restore with --inherit-fd fd\[N\]:extnet or --join-ns net:PATH$/],
      [['--inherit-fd', 'fd[0]:other'], /dumped as external \(key extnet\)/],
      [['--join-ns', `net:${dir}/inventory.img`], /is not a network namespace/],
      [['--join-ns', 'ipc:/proc/1/ns/ipc'], /only a network namespace can be joined$/],
    ];
    for (const [args, re] of cases) {
      const r = runStasis(['restore', '-D', dir, '-d', ...args]);
      assert.equal(r.status, 2, describeCli(r)); // a usage error: what the images need was not given
      assert.match(r.stderr.trim(), re);
      assert.equal(r.stderr.trim().split('\n').length, 1);
      reapZombies();
      assert.deepEqual(descendantsOf(), [], 'nothing created');
      assert.ok(!fs.existsSync(`/proc/${fx.pid}`));
    }
  } finally { await fx.kill(); }
});

test('--external net[...] naming another namespace than the tree\'s: refused at dump, the process goes on', async () => {
  const fx = await startInNs();
  try {
    const r = runStasis(['dump', '-t', String(fx.pid), '-D', path.join(root, 'wrong'), '--external', 'net[1]:extnet']);
    assert.equal(r.status, 2, describeCli(r));
    assert.match(r.stderr, new RegExp(`^stasis: --external net\\[1\\]:extnet: the tree's network namespace is net:\\[${inode(NS_PATH)}\\], not net:\\[1\\]`));
    await fx.assertCounting();
  } finally { await fx.kill(); }
});
