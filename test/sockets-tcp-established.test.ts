// An established TCP connection between a client outside the tree (this
// test process, Node's net module) and a server inside it (fixtures/
// tcpserver.c) survives `dump --tcp-established` + restore:
//  - what the client sent before the dump and the server had not read yet
//    (the server was paused) is read by the server after the restore;
//  - the client sees no EOF, reset or error at any point, and the connection
//    carries requests both ways afterwards (megabytes each way), the server's
//    request count going on from where it was;
//  - what the server had sent but the client had not taken yet (the client
//    stopped reading: megabytes in the server's send queue) arrives after the
//    restore, every byte in order, and so does a 2 MiB transfer after it.
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Fixture, initHarness, tmpDir, tracerPid, pattern, waitFor, sleep, runStasis, describeCli } from './harness';
import { readImage } from '../src/images/image';
import { readWithPayloads } from './harness';
import { tryKill, abi } from '../src/sys';
import { Client, dumpKillRestore, tcpSockets } from './net-helpers';

const PORT = 47330; // +1, +2 for the other tests
const DATA = 40000; // what the client sends the paused server before the dump

let root: string;
const cleanup: (() => Promise<void> | void)[] = [];

before(() => {
  initHarness();
  root = tmpDir('tcpest');
});

after(async () => {
  for (const f of cleanup.reverse()) await f();
  fs.rmSync(root, { recursive: true, force: true });
});

interface Conn { fx: Fixture; client: Client; port: number }

async function connect(port: number): Promise<Conn> {
  const fx = await Fixture.start('tcpserver', { extraFds: true, args: [String(port)] });
  cleanup.push(() => fx.kill());
  const client = await Client.connect({ host: '127.0.0.1', port });
  cleanup.push(() => client.destroy());
  await fx.waitLog(/^ACCEPTED$/m);
  await client.write('ECHO hello\n');
  await client.waitText(/^hello #1\n$/);
  return { fx, client, port };
}

/** The server's side of the connection, as the kernel sees it. */
function serverSide(c: Conn) {
  return tcpSockets(c.port).find((s) => s.state === 'ESTABLISHED' && s.peerPort === c.client.sock.localPort);
}

async function toggle(c: Conn, word: 'PAUSED' | 'RESUMED', n: number): Promise<void> {
  assert.equal(tryKill(c.fx.pid, abi.SIG.SIGUSR2), 0);
  await c.fx.waitLog(new RegExp(`(?:^${word}$[\\s\\S]*){${n}}`, 'm'), 3000);
}

function assertNoClientEvents(c: Conn, when: string): void {
  assert.deepEqual(c.client.events, [], `${when}: the client saw no end/close/error`);
  assert.ok(!c.client.sock.destroyed, `${when}: the client socket is open`);
}

/** Pause the server; send it an ECHO and DATA it does not read: returns the bytes now in its receive queue. */
async function queueUnread(c: Conn): Promise<number> {
  await toggle(c, 'PAUSED', 1);
  await c.client.write('ECHO before the dump\n');
  await c.client.write(Buffer.concat([Buffer.from(`DATA ${DATA} 5\n`), pattern(5, DATA)]));
  const inq = 'ECHO before the dump\n'.length + `DATA ${DATA} 5\n`.length + DATA;
  await waitFor(`${inq} bytes in the server's receive queue`, () => serverSide(c)?.recvQ === inq, 5000, 10);
  assert.equal(c.client.sock.writableLength, 0, 'all handed to the kernel');
  return inq;
}

/** Dump with --tcp-established, kill, restore; checks the image and the restored server side. */
async function dumpRestore(c: Conn, name: string, inq: number): Promise<{ outq: number }> {
  const dir = path.join(root, name);
  await dumpKillRestore(c.fx, dir, {
    dumpArgs: ['--tcp-established'],
    between: async () => {
      await sleep(200); // the connection, its server gone, stays quiet
      assertNoClientEvents(c, 'while dumped');
    },
  });
  const isk = readImage(dir, 'files.img', 'FILES', 'file_entry').filter((f) => f.isk).map((f) => f.isk!);
  const est = isk.find((s) => s.state === 1);
  assert.ok(est, 'the established socket is in the images');
  assert.equal(est.dst_port, c.client.sock.localPort);
  assert.equal(isk.filter((s) => s.state === 10).length, 1, 'and the listener (same port)');
  const streams = fs.readdirSync(dir).filter((f) => f.startsWith('tcp-stream-'));
  assert.equal(streams.length, 1);
  const [ts] = readWithPayloads(dir, streams[0], 'TCP_STREAM', 'tcp_stream_entry', (d) => d.inq_len + d.outq_len);
  assert.equal(ts.inq_len, inq, 'unread bytes of the server');
  assert.ok((ts.extra as Buffer).subarray(0, inq).includes(Buffer.from('ECHO before the dump\n')));

  assert.equal(tracerPid(c.fx.pid), 0);
  const side = serverSide(c);
  assert.ok(side, 'the restored server side is ESTABLISHED again');
  assert.equal(side.recvQ, inq, 'its receive queue as dumped');
  assert.ok(tcpSockets(c.port).some((s) => s.state === 'LISTEN'), 'the listener is back on the same port');
  assertNoClientEvents(c, 'after the restore');
  return { outq: ts.outq_len };
}

/** SO_REUSEADDR of each server's connection at its end ("CONN REUSEADDR n"), by test. */
const reuseAtEnd = new Map<string, number>();

/** The server reads what waited for it, then serves requests both ways; PASS. */
async function carryOn(c: Conn, next: number, name: string): Promise<void> {
  const { client, fx } = c;
  client.clear();
  await toggle(c, 'RESUMED', 1);
  await client.waitText(new RegExp(`^before the dump #${next}\\nDATA OK ${DATA} #${next + 1}\\n$`));
  client.clear();
  await client.write('ECHO after the restore\n');
  await client.waitText(new RegExp(`^after the restore #${next + 2}\\n$`));
  client.clear();
  const big = 1 << 20;
  await client.write(Buffer.concat([Buffer.from(`DATA ${big} 9\n`), pattern(9, big)]));
  await client.waitText(new RegExp(`^DATA OK ${big} #${next + 3}\\n$`), 10000);
  client.clear();
  await client.write(`BULK ${2 * big} 3\n`);
  const tail = `\nBULK DONE #${next + 4}\n`;
  const got = await client.waitBytes(2 * big + tail.length, 10000);
  assert.equal(got.length, 2 * big + tail.length, 'the BULK answer, nothing more or less');
  assert.ok(got.subarray(0, 2 * big).equals(pattern(3, 2 * big)), '2 MiB from the server after the restore, intact');
  assert.equal(got.subarray(2 * big).toString(), tail);
  assertNoClientEvents(c, 'after traffic both ways');
  // The client closes first (the TIME_WAIT is then the client's, not on the server's port).
  client.clear();
  await client.write('BYE\n');
  await client.waitText(new RegExp(`^BYE #${next + 5}\n$`));
  client.sock.end();
  await fx.waitLog(/^CLOSED$/m);

  const { status, log } = await fx.terminate();
  assert.match(log, /^PASS$/m, log);
  assert.doesNotMatch(log, /FAIL/, log);
  assert.match(log, new RegExp(`^SERVED ${next + 5}$`, 'm'));
  assert.deepEqual(status, { kind: 'exited', pid: fx.pid, code: 0 });
  reuseAtEnd.set(name, Number(/^CONN REUSEADDR (\d+)$/m.exec(log)?.[1]));
}

test('data the server had not read yet is delivered after restore; the connection carries data both ways', async () => {
  const c = await connect(PORT);
  const inq = await queueUnread(c);
  const { outq } = await dumpRestore(c, 'unread', inq);
  assert.equal(outq, 0, 'nothing unacknowledged on the server\'s side');
  await carryOn(c, 2, 'restored');
});

test('data the server had sent and the client had not taken yet (MiBs in the send queue) arrives after restore', async () => {
  const BULK = 6 << 20;
  const c = await connect(PORT + 1);
  const head = c.client.data().length;
  // The client stops reading and asks for more than the kernel buffers hold:
  // the rest waits in the server's send queue (and in its own buffer).
  c.client.sock.pause();
  await c.client.write(`BULK ${BULK} 7\n`);
  let last = -1;
  await waitFor('the server\'s send queue to fill and settle', () => {
    const s = serverSide(c);
    if (!s || s.sendQ === 0) return false;
    const settled = s.sendQ === last;
    last = s.sendQ;
    return settled;
  }, 5000, 100);
  const sendQ = serverSide(c)!.sendQ;
  const inq = await queueUnread(c);
  const { outq } = await dumpRestore(c, 'unsent', inq);
  assert.equal(outq, sendQ, 'the send queue as the kernel showed it');

  // The client reads again: the whole BULK answer, in order.
  c.client.sock.resume();
  const got = await c.client.waitBytes(head + BULK + '\nBULK DONE #2\n'.length, 20000);
  assert.equal(got.length, head + BULK + '\nBULK DONE #2\n'.length, 'the BULK answer, nothing more or less');
  const bulk = got.subarray(head, head + BULK);
  const want = pattern(7, BULK);
  const firstBad = bulk.equals(want) ? -1 : bulk.findIndex((b, i) => b !== want[i]);
  assert.equal(firstBad, -1, `BULK byte ${firstBad} of ${BULK} differs (send queue ${sendQ} at the dump)`);
  assert.equal(got.subarray(head + BULK).toString(), '\nBULK DONE #2\n');
  await carryOn(c, 3, 'unsent');
});

test('dump -R --tcp-established: the connection goes on in the running server, unread data and all', async () => {
  const c = await connect(PORT + 2);
  const inq = await queueUnread(c);
  const r = runStasis(['dump', '-t', String(c.fx.pid), '-D', path.join(root, 'running'), '-R', '--tcp-established']);
  assert.equal(r.status, 0, describeCli(r));
  assert.match(r.stderr, /left running/);
  assert.equal(tracerPid(c.fx.pid), 0);
  assert.equal(serverSide(c)?.recvQ, inq, 'the receive queue untouched');
  await sleep(100);
  assertNoClientEvents(c, 'after the dump');
  await carryOn(c, 2, 'running');
});

test('a connection accepted from a SO_REUSEADDR listener keeps SO_REUSEADDR, restored or left running', () => {
  assert.deepEqual(Object.fromEntries(reuseAtEnd), { restored: 1, unsent: 1, running: 1 });
});
