// A real program: a Node.js http server (`node -e`, its V8 threads, epoll,
// eventfds and pipes of libuv, JIT code) keeping a request counter and a
// 16 MiB buffer in memory is dumped (and killed), restored, and answers with
// the counter going on (not reset) and the buffer's hash unchanged; it still
// runs timers and handles SIGTERM with its own handler. Requests come from
// this test process (outside the dumped tree).
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { initHarness, tmpDir, listFds, type Fixture } from './harness';
import { startProgram, waitPort, dumpKillRestore, httpGet, tcpSockets } from './net-helpers';

const PORT = 47360;

const SERVER = `
const http = require('http');
const crypto = require('crypto');
let count = 0, ticks = 0;
const big = Buffer.alloc(16 << 20);
for (let i = 0; i < big.length; i += 4) big.writeUInt32LE((i * 2654435761) >>> 0, i);
const hash = () => crypto.createHash('sha256').update(big).digest('hex');
const born = hash();
setInterval(() => { ticks++; }, 10);
http.createServer((req, res) => {
  count++;
  res.setHeader('connection', 'close');
  res.end(JSON.stringify({ count, ticks, pid: process.pid, hash: req.url === '/hash' ? hash() : undefined, born }));
}).listen(${PORT}, '127.0.0.1', () => console.log('LISTENING ' + process.pid));
process.on('SIGTERM', () => { console.log('BYE ' + count); process.exit(0); });
`;

let root: string;
let fx: Fixture | undefined;

before(() => {
  initHarness();
  root = tmpDir('nodehttp');
});

after(async () => {
  await fx?.kill();
  fs.rmSync(root, { recursive: true, force: true });
});

interface Reply { count: number; ticks: number; pid: number; hash?: string; born: string }

async function get(urlPath = '/'): Promise<Reply> {
  const r = await httpGet(PORT, urlPath);
  assert.equal(r.status, 200);
  return JSON.parse(r.body) as Reply;
}

test('a Node.js http server: dump → kill → restore → the request counter goes on, memory intact', async () => {
  fx = await startProgram('nodehttp', () => [process.execPath, '-e', SERVER]);
  await fx.waitLog(/^LISTENING \d+$/m);
  await waitPort(PORT); // a bare connection: no request
  for (let i = 1; i <= 5; i++) assert.equal((await get()).count, i);
  const h = await get('/hash');
  assert.equal(h.count, 6);
  assert.equal(h.hash, h.born);
  assert.equal(h.pid, fx.pid);
  await new Promise((r) => setTimeout(r, 50));
  assert.deepEqual(tcpSockets(PORT).filter((s) => s.state === 'ESTABLISHED'), [], 'no connection left');
  const fdsBefore = listFds(fx.pid);
  const threadsBefore = fs.readdirSync(`/proc/${fx.pid}/task`).length;
  const ticksAtDump = (await get()).ticks; // #7

  const dir = path.join(root, 'images');
  const { dump } = await dumpKillRestore(fx, dir);
  assert.match(dump.stderr, new RegExp(`\\b${threadsBefore} threads\\b`), dump.stderr);
  assert.deepEqual(listFds(fx.pid), fdsBefore, 'the same fds');
  assert.equal(fs.readdirSync(`/proc/${fx.pid}/task`).length, threadsBefore, 'the same threads');

  const a = await get();
  assert.equal(a.count, 8, 'the counter goes on from 7 (not reset)');
  assert.equal(a.pid, fx.pid);
  assert.ok(a.ticks >= ticksAtDump, `timer ticks ${a.ticks} go on from ${ticksAtDump}`);
  const b = await get('/hash');
  assert.equal(b.count, 9);
  assert.equal(b.hash, h.born, 'the 16 MiB buffer hashes as before');
  assert.equal(b.born, h.born);
  await new Promise((r) => setTimeout(r, 200));
  const c = await get();
  assert.ok(c.ticks > b.ticks, `setInterval runs after the restore (${b.ticks} → ${c.ticks})`);

  const { status, log } = await fx.terminate();
  assert.match(log, /^BYE 10$/m, log);
  assert.deepEqual(status, { kind: 'exited', pid: fx.pid, code: 0 }, log);
});
