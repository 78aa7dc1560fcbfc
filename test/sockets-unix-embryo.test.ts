// Unix connections not yet accepted (fixtures/skembryo.c): stream and
// seqpacket listeners with connections waiting in their accept queue, their
// data sent by the client (one client closed since, one shut for writing);
// sockets whose peer closed with data still queued, a bound datagram socket
// with a datagram waiting. After restore the program accepts them in order,
// with their names, data and end of file. A socket file keeps its owner and
// mode; a datagram socket whose name was unlinked gets its senders back. What cannot be carried (a client
// or a listener outside the tree; --leave-running, which would lose the
// waiting data) is refused with one line and the process runs on unchanged.
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { Fixture, initHarness, runStasis, tmpDir, pattern } from './harness';
import { readImage } from '../src/images/image';
import { FD_TYPES } from '../src/images/criu';
import { readWithPayloads } from './harness';
import { dumpKillRestore, assertOneLineError, silentUnixListener } from './net-helpers';

let root: string;
const fixtures: Fixture[] = [];

before(() => {
  initHarness();
  root = tmpDir('skembryo');
});

after(async () => {
  for (const f of fixtures) await f.kill();
  fs.rmSync(root, { recursive: true, force: true });
});

test('connections not yet accepted (stream, seqpacket; a client closed), orphaned queues: accepted after restore with their data → PASS', async () => {
  const fx = await Fixture.start('skembryo', { extraFds: true, args: ['all'] });
  fixtures.push(fx);
  const dir = path.join(root, 'all');
  const { restore } = await dumpKillRestore(fx, dir);
  assert.doesNotMatch(restore.stderr, /warning/, restore.stderr);

  // The embryos: entries of no fd, in queue order, under their listener; their clients' peer is the listener.
  const files = readImage(dir, 'files.img', 'FILES', 'file_entry');
  const usk = files.filter((f) => f.usk).map((f) => ({ id: f.id as number, ...f.usk }));
  const stPath = path.join(fx.dir, 'st.sock') + '\0';
  const ls = usk.find((u) => Buffer.from(u.name ?? []).toString('latin1') === stPath && u.embryo_of === undefined)!;
  const lq = usk.find((u) => Buffer.from(u.name ?? []).toString('latin1').startsWith('\0stasis-embryo-') && u.embryo_of === undefined)!;
  assert.ok(ls && lq, 'both listeners dumped');
  const embryos = (l: typeof ls) => usk.filter((u) => u.embryo_of === l.ino).sort((a, b) => a.id - b.id);
  assert.equal(embryos(ls).length, 3, 'three connections wait on the stream listener');
  assert.equal(embryos(lq).length, 2, 'two on the seqpacket listener');
  const clients = usk.filter((u) => u.peer === ls.ino);
  assert.deepEqual(clients.map((c) => c.ino).sort(), embryos(ls).map((e) => e.peer).filter(Boolean).sort(), 'the two clients still open name the listener as peer');
  assert.equal(embryos(ls)[1].peer, 0, 'the second client closed');
  const queues = readWithPayloads(dir, 'sk-queues.img', 'SK_QUEUES', 'sk_packet_entry', (d) => d.length);
  const dataOf = (id: number) => queues.filter((q) => q.id_for === id).map((q) => q.extra as Buffer);
  assert.deepEqual(dataOf(embryos(ls)[0].id), [pattern(31, 3000)], 'stream #1: the 3000 bytes its client sent');
  assert.deepEqual(dataOf(embryos(ls)[1].id), [pattern(32, 100)], 'stream #2: 100 bytes');
  assert.deepEqual(dataOf(embryos(ls)[2].id), [], 'stream #3: nothing');
  assert.deepEqual(dataOf(embryos(lq)[0].id), [pattern(41, 10), pattern(42, 500)], 'seqpacket #1: two messages');
  assert.deepEqual(dataOf(embryos(lq)[1].id), [pattern(43, 7), pattern(44, 9)], 'seqpacket #2: two messages');

  assert.ok(fs.lstatSync(path.join(fx.dir, 'st.sock')).isSocket(), 'the listener is bound to its path again');
  const { status, log } = await fx.terminate();
  assert.match(log, /^PASS$/m, log);
  assert.doesNotMatch(log, /FAIL/, log);
  assert.deepEqual(status, { kind: 'exited', pid: fx.pid, code: 0 });
});

test('a socket file\'s owner and mode; a datagram socket whose name was unlinked (its directory too), with senders connected to it: as before → PASS', async () => {
  const fx = await Fixture.start('skembryo', { extraFds: true, args: ['names'] });
  fixtures.push(fx);
  const dir = path.join(root, 'names');
  await dumpKillRestore(fx, dir);
  const usk = readImage(dir, 'files.img', 'FILES', 'file_entry').filter((f) => f.usk).map((f) => f.usk!);
  const named = (n: string) => usk.find((u) => Buffer.from(u.name ?? []).toString('latin1') === path.join(fx.dir, n) + '\0' && u.embryo_of === undefined)!;
  assert.deepEqual(named('ln.sock').file_perms, { mode: 0o751, uid: 4242, gid: 4343 }, 'the listener\'s file: owner and mode');
  const rd = named('sub/rd.sock');
  assert.equal(rd.deleted, true, 'the receiver\'s name was unlinked');
  assert.equal(usk.filter((u) => u.peer === rd.ino).length, 2, 'two senders connected to it');
  assert.ok(!fs.existsSync(path.join(fx.dir, 'sub')), 'the directory made to bind the name again is gone');
  const { log } = await fx.terminate();
  assert.match(log, /^PASS$/m, log);
  assert.doesNotMatch(log, /FAIL/, log);
});

test('--leave-running with connections not yet accepted holding data: refused with one line; the connections still wait', async () => {
  const fx = await Fixture.start('skembryo', { extraFds: true, args: ['all'] });
  fixtures.push(fx);
  const r = runStasis(['dump', '-t', String(fx.pid), '-D', path.join(root, 'leave'), '--leave-running']);
  assertOneLineError(r, new RegExp(`^stasis: fd \\d+ of pid ${fx.pid}: listening unix socket ${path.join(fx.dir, 'st.sock')}\\S* has 3 connection\\(s\\) not yet accepted holding data \\(or whose client closed\\): reading it takes accepting them, not done with --leave-running$`));
  const { log } = await fx.terminate();
  assert.match(log, /^PASS$/m, log);
});

test('a connection not yet accepted from a client outside the tree: refused; it still waits in the accept queue', async () => {
  const fx = await Fixture.start('skembryo', { extraFds: true, args: ['listen-only'] });
  fixtures.push(fx);
  const c = net.connect({ path: path.join(fx.dir, 'st.sock') });
  await new Promise<void>((resolve, reject) => { c.once('connect', resolve); c.once('error', reject); });
  try {
    const r = runStasis(['dump', '-t', String(fx.pid), '-D', path.join(root, 'outside-client')]);
    assertOneLineError(r, new RegExp(`^stasis: fd \\d+ of pid ${fx.pid}: listening unix socket ${path.join(fx.dir, 'st.sock')}\\S* has a connection not yet accepted from socket \\d+, outside the dumped tree; not supported$`));
    const { log } = await fx.terminate();
    assert.match(log, /^PASS$/m, log);
  } finally {
    c.destroy();
  }
});

test('a client whose listener, outside the tree, has not accepted it: refused with one line; the process runs on', async () => {
  const sockPath = path.join(root, 'outside.sock');
  const l = silentUnixListener(sockPath);
  try {
    const fx = await Fixture.start('skembryo', { extraFds: true, args: ['client-of', sockPath] });
    fixtures.push(fx);
    const r = runStasis(['dump', '-t', String(fx.pid), '-D', path.join(root, 'outside-listener')]);
    assertOneLineError(r, new RegExp(`^stasis: fd 3 of pid ${fx.pid}: unix socket \\d+ is connected to listener ${sockPath}\\S* \\(socket \\d+\\), outside the dumped tree, which has not accepted it yet; not supported$`));
    const { log } = await fx.terminate();
    assert.match(log, /^PASS$/m, log);
  } finally {
    l.close();
  }
});

test('files in flight (SCM_RIGHTS) in queues with no peer (a stream end whose peer closed, a bound datagram socket): dump → restore → PASS', async () => {
  const fx = await Fixture.start('skembryo', { extraFds: true, args: ['scm-orphan'] });
  fixtures.push(fx);
  const dir = path.join(root, 'scm-orphan');
  await dumpKillRestore(fx, dir);
  const queued = readWithPayloads(dir, 'sk-queues.img', 'SK_QUEUES', 'sk_packet_entry', (d) => d.length);
  const files = readImage(dir, 'files.img', 'FILES', 'file_entry');
  const carried = queued.map((e) => [e.length, (e.scm ?? []).flatMap((c) => c.rights ?? []).map((id) => files.find((f) => f.id === id)?.type)]).sort();
  assert.deepEqual(carried, [[6, [FD_TYPES.PIPE]], [7, [FD_TYPES.PIPE]]]);
  const { log } = await fx.terminate();
  assert.match(log, /^PASS$/m, log);
});

test('a file in flight (SCM_RIGHTS) in the queue of a connection not yet accepted: refused before accepting; it still waits with its file', async () => {
  const fx = await Fixture.start('skembryo', { extraFds: true, args: ['scm-embryo'] });
  fixtures.push(fx);
  const r = runStasis(['dump', '-t', String(fx.pid), '-D', path.join(root, 'scm-embryo')]);
  assertOneLineError(r, new RegExp(`^stasis: fd \\d+ of pid ${fx.pid}: listening unix socket ${path.join(fx.dir, 'sf.sock')}\\S* has connection\\(s\\) not yet accepted whose queues hold 1 file\\(s\\) in flight \\(SCM_RIGHTS\\); not supported$`));
  const { log } = await fx.terminate();
  assert.match(log, /^PASS$/m, log);
});
