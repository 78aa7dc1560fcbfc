// Inet sockets (fixtures/sockets.c, mode inet): TCP listeners on 127.0.0.1
// and [::1] accept again on the same ports after restore, SO_REUSEADDR and
// IPV6_V6ONLY kept; UDP sockets (IPv4 and IPv6) get their queued datagrams
// back intact, one by one, from their original source ports; a connected
// UDP socket still reaches its peer. An established TCP connection dumped
// without --tcp-established is refused with one clear line, and the process
// runs on with its connection.
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as dgram from 'node:dgram';
import * as path from 'node:path';
import { Fixture, initHarness, runStasis, tmpDir, tracerPid, procState, pattern, waitFor } from './harness';
import { readImage } from '../src/images/image';
import { readWithPayloads } from './harness';
import { Client, dumpKillRestore, assertOneLineError, portFree } from './net-helpers';

const PORT = 47320; // tcp4; +1 tcp6; +2 udp4; +3 udp6; +4 the test's own server

let root: string;
const fixtures: Fixture[] = [];

before(() => {
  initHarness();
  root = tmpDir('sinet');
});

after(async () => {
  for (const f of fixtures) await f.kill();
  fs.rmSync(root, { recursive: true, force: true });
});

async function hello(fx: Fixture, host: string, port: number, name: string, n: number): Promise<void> {
  const c = await Client.connect({ host, port });
  try {
    await c.waitText(new RegExp(`^HELLO ${name} ${n}\\n$`), 3000);
  } finally {
    c.destroy();
  }
  await fx.waitLog(new RegExp(`^ACCEPTED ${name} ${n}$`, 'm'), 3000);
}

/** Datagram `idx` as the fixture checks it: "DGRAM idx SRCPORT " then pattern idx. */
function datagram(idx: number, srcPort: number, len: number): Buffer {
  const head = Buffer.from(`DGRAM ${idx} ${srcPort} `);
  return Buffer.concat([head, pattern(idx, len - head.length)]);
}

/** Send datagrams from a fresh socket of ours, then close it (its port is free again for the restore's re-send). */
async function sendFrom(type: 'udp4' | 'udp6', to: { host: string; port: number }, build: (srcPort: number) => Buffer[]): Promise<number> {
  const s = dgram.createSocket(type);
  await new Promise<void>((resolve) => s.bind(0, type === 'udp4' ? '127.0.0.1' : '::1', resolve));
  const src = s.address().port;
  for (const d of build(src)) {
    await new Promise<void>((resolve, reject) => s.send(d, to.port, to.host, (e) => (e ? reject(e) : resolve())));
  }
  await new Promise<void>((resolve) => s.close(resolve));
  return src;
}

test('TCP listeners (IPv4, IPv6) and UDP sockets with queued datagrams: dump → restore → PASS', async () => {
  const fx = await Fixture.start('sockets', { extraFds: true, args: ['inet', String(PORT)] });
  fixtures.push(fx);
  const ucPort = Number(fx.manifest.values.get('UCPORT')![0]);
  await hello(fx, '127.0.0.1', PORT, 'tcp4', 1);
  await hello(fx, '::1', PORT + 1, 'tcp6', 1);
  const src4 = await sendFrom('udp4', { host: '127.0.0.1', port: PORT + 2 }, (p) => [datagram(1, p, 500), datagram(2, p, 1200)]);
  const src6 = await sendFrom('udp6', { host: '::1', port: PORT + 3 }, (p) => [datagram(3, p, 300)]);

  const dir = path.join(root, 'inet');
  const { restore } = await dumpKillRestore(fx, dir, {
    between: async () => {
      for (const p of [PORT, PORT + 1]) assert.ok(await portFree(p, p === PORT ? '127.0.0.1' : '::1'), `port ${p} free while dumped`);
    },
  });
  assert.doesNotMatch(restore.stderr, /warning/, `the datagrams' source ports were free: ${restore.stderr}`);
  const files = readImage(dir, 'files.img', 'FILES', 'file_entry');
  const isk = files.filter((f) => f.isk).map((f) => f.isk!);
  assert.equal(isk.length, 5);
  const listeners = isk.filter((s) => s.state === 10);
  assert.deepEqual(listeners.map((s) => s.src_port).sort(), [PORT, PORT + 1]);
  assert.ok(listeners.every((s) => s.opts.reuseaddr), 'SO_REUSEADDR in the images');
  const queues = readWithPayloads(dir, 'sk-queues.img', 'SK_QUEUES', 'sk_packet_entry', (d) => d.length);
  assert.deepEqual(queues.map((q) => (q.extra as Buffer).length).sort((a, b) => a - b), [300, 500, 1200], 'three datagrams queued');

  // The listeners answer again on their ports (the hello count lives on in memory).
  await hello(fx, '127.0.0.1', PORT, 'tcp4', 2);
  await hello(fx, '::1', PORT + 1, 'tcp6', 2);
  await hello(fx, '127.0.0.1', PORT, 'tcp4', 3);
  const { status, log } = await fx.terminate();
  assert.match(log, /^PASS$/m, log);
  assert.doesNotMatch(log, /FAIL/, log);
  assert.deepEqual(status, { kind: 'exited', pid: fx.pid, code: 0 });
  // Each datagram once, in order, intact, from where it was sent.
  assert.match(log, new RegExp(`^UDP4 500 DGRAM 1 from ${src4} \\(says ${src4}\\)\\nUDP4 1200 DGRAM 2 from ${src4} \\(says ${src4}\\)\\nUDP4 COUNT 2$`, 'm'), log);
  assert.match(log, new RegExp(`^UDP6 300 DGRAM 3 from ${src6} \\(says ${src6}\\)\\nUDP6 COUNT 1$`, 'm'), log);
  assert.match(log, new RegExp(`^UDP4 PING from ${ucPort}$`, 'm'), 'the connected UDP socket kept its port and peer');
});

test('an established TCP connection without --tcp-established: refused with one clear line; the process runs on', async () => {
  const accepted: net.Socket[] = [];
  const srv = net.createServer((s) => accepted.push(s));
  await new Promise<void>((resolve) => srv.listen(PORT + 4, '127.0.0.1', resolve));
  try {
    const fx = await Fixture.start('sockets', { extraFds: true, args: ['tcp-client', String(PORT + 4)] });
    fixtures.push(fx);
    await waitFor('our server to accept the fixture\'s connection', () => accepted.length === 1);
    const dir = path.join(root, 'established');
    const r = runStasis(['dump', '-t', String(fx.pid), '-D', dir]);
    assertOneLineError(r, /established TCP connection .*--tcp-established/);
    assert.ok(!fs.existsSync(path.join(dir, 'inventory.img')), 'no inventory: not a checkpoint');
    assert.equal(tracerPid(fx.pid), 0, 'released');
    assert.match(procState(fx.pid), /^[RS]$/, 'running');
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
