// Unix sockets (fixtures/sockets.c, mode unix): socketpairs with queued data
// (a byte stream, and datagrams whose boundaries must be kept), listeners on
// a path and on an abstract name that accept connections after restore, a
// bound datagram socket. A unix socket connected to a process outside the
// dumped tree is refused with one clear line, and the process runs on.
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { Fixture, initHarness, runStasis, tmpDir, tracerPid, procState, pattern, waitFor } from './harness';
import { readImage } from '../src/images/image';
import { readWithPayloads } from './harness';
import { Client, dumpKillRestore, assertOneLineError, unixReadAll, silentUnixListener } from './net-helpers';

let root: string;
const fixtures: Fixture[] = [];

before(() => {
  initHarness();
  root = tmpDir('sunix');
});

after(async () => {
  for (const f of fixtures) await f.kill();
  fs.rmSync(root, { recursive: true, force: true });
});

/** Connect (abstract names through python: Node cannot), read the HELLO until the fixture closes. */
async function hello(fx: Fixture, sockName: string, name: string, n: number): Promise<void> {
  if (sockName.startsWith('\0')) {
    assert.equal(unixReadAll(Buffer.from(sockName, 'latin1')), `HELLO ${name} ${n}\n`);
  } else {
    const c = await Client.connect({ path: sockName });
    try {
      await c.waitText(new RegExp(`^HELLO ${name} ${n}\\n$`), 3000);
    } finally {
      c.destroy();
    }
  }
  await fx.waitLog(new RegExp(`^ACCEPTED ${name} ${n}$`, 'm'), 3000);
}

test('socketpairs with queued data, path and abstract listeners, a bound datagram socket: dump → restore → PASS', async () => {
  const fx = await Fixture.start('sockets', { extraFds: true, args: ['unix'] });
  fixtures.push(fx);
  const abstract = fx.manifest.values.get('ABSTRACT')![0];
  const sockPath = path.join(fx.dir, 'listen.sock');
  const viaPath = sockPath;
  const viaAbstract = `\0${abstract}`;
  await hello(fx, viaPath, 'path', 1);
  await hello(fx, viaAbstract, 'abstract', 1);

  const dir = path.join(root, 'pairs');
  const { restore } = await dumpKillRestore(fx, dir);
  assert.doesNotMatch(restore.stderr, /warning/, restore.stderr);
  // The queued data, as dumped: the stream in one piece, the datagrams one by one.
  const files = readImage(dir, 'files.img', 'FILES', 'file_entry');
  const usk = files.filter((f) => f.usk).map((f) => ({ id: f.id as number, ...f.usk }));
  assert.equal(usk.length, 7, 'two pairs, two listeners, one bound socket');
  const names = usk.map((u) => Buffer.from(u.name ?? []).toString('latin1')).filter(Boolean).sort();
  assert.deepEqual(names, [`\0${abstract}`, path.join(fx.dir, 'dgram.sock') + '\0', sockPath + '\0'].sort(), 'names of the bound sockets');
  const queues = readWithPayloads(dir, 'sk-queues.img', 'SK_QUEUES', 'sk_packet_entry', (d) => d.length);
  const lens = queues.map((q) => (q.extra as Buffer).length).sort((a, b) => a - b);
  assert.deepEqual(lens, [1, 10, 77, 1000, 2000, 5000], 'queued: 5000 + 2000 bytes of stream, datagrams of 10, 1000, 1 and 77');
  assert.ok(queues.some((q) => (q.extra as Buffer).equals(pattern(11, 5000))), 'the 5000 stream bytes, in order');

  // The listeners are back: on the path (its socket file re-created) and the abstract name.
  assert.ok(fs.lstatSync(sockPath).isSocket());
  await hello(fx, viaPath, 'path', 2);
  await hello(fx, viaAbstract, 'abstract', 2);
  await hello(fx, viaPath, 'path', 3);
  const { status, log } = await fx.terminate();
  assert.match(log, /^PASS$/m, log);
  assert.doesNotMatch(log, /FAIL/, log);
  assert.deepEqual(status, { kind: 'exited', pid: fx.pid, code: 0 });
});

test('a unix socket connected to a listener outside the tree: refused with one clear line; the process runs on', async () => {
  const sockPath = path.join(root, 'outside.sock');
  const accepted: net.Socket[] = [];
  const srv = net.createServer((s) => accepted.push(s));
  await new Promise<void>((resolve) => srv.listen(sockPath, resolve));
  try {
    const fx = await Fixture.start('sockets', { extraFds: true, args: ['unix-outside', sockPath] });
    fixtures.push(fx);
    await waitFor('our server to accept the fixture\'s connection', () => accepted.length === 1);
    const dir = path.join(root, 'outside');
    const r = runStasis(['dump', '-t', String(fx.pid), '-D', dir]);
    assertOneLineError(r, /unix socket .*connected to .*outside the dumped tree/);
    assert.ok(!fs.existsSync(path.join(dir, 'inventory.img')), 'no inventory: not a checkpoint');
    assert.equal(tracerPid(fx.pid), 0, 'released');
    assert.match(procState(fx.pid), /^[RS]$/, 'running');
    // Its connection still works: it echoes.
    assert.equal(accepted.length, 1);
    const got = new Promise<string>((resolve) => accepted[0].once('data', (d: Buffer) => resolve(d.toString())));
    accepted[0].write('ping after the refused dump');
    assert.equal(await got, 'ping after the refused dump');
    const { status, log } = await fx.terminate();
    assert.match(log, /^PASS$/m, log);
    assert.deepEqual(status, { kind: 'exited', pid: fx.pid, code: 0 });
  } finally {
    for (const s of accepted) s.destroy();
    await new Promise((resolve) => srv.close(resolve));
  }
});

test('a unix socket connected to a listener outside the tree that has not accepted it yet: refused too', {
}, async () => {
  const sockPath = path.join(root, 'silent.sock');
  const lsn = silentUnixListener(sockPath);
  try {
    const fx = await Fixture.start('sockets', { extraFds: true, args: ['unix-outside', sockPath] });
    fixtures.push(fx);
    const dir = path.join(root, 'silent');
    const r = runStasis(['dump', '-t', String(fx.pid), '-D', dir]);
    assertOneLineError(r, /unix socket .*connected to .*outside the dumped tree|not yet accepted/);
    assert.equal(tracerPid(fx.pid), 0, 'released');
    assert.match(procState(fx.pid), /^[RS]$/, 'running');
  } finally {
    lsn.close();
  }
});
