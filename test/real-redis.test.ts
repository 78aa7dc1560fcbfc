// A real program: redis-server (Debian package) holding 200,000 keys is
// dumped (and killed), restored, and answers on its port with every key:
// DBSIZE, 100 random keys read back with their values, and it takes writes.
// The client (redis-cli) runs outside the dumped tree.
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { initHarness, tmpDir, listFds, descendantsOf, type Fixture } from './harness';
import { startProgram, waitPort, dumpKillRestore, tcpSockets } from './net-helpers';

const PORT = 47340;
const KEYS = 200_000;

let root: string;
let fx: Fixture | undefined;

before(() => {
  initHarness();
  root = tmpDir('redis');
});

after(async () => {
  await fx?.kill();
  fs.rmSync(root, { recursive: true, force: true });
});

function cli(args: string[], input?: string): string {
  const r = spawnSync('redis-cli', ['-h', '127.0.0.1', '-p', String(PORT), ...args], {
    encoding: 'utf8', input, timeout: 30000, maxBuffer: 64 << 20,
  });
  if (r.error) throw r.error;
  if (r.status !== 0) throw new Error(`redis-cli ${args.join(' ')}: status ${r.status}\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

const keyOf = (i: number) => `key:${i}`;
const valueOf = (i: number) => `value-${i}-${((i * 2654435761) >>> 0).toString(16)}`;

/** SET key:i value-i-hash for every i, as one RESP stream for `redis-cli --pipe`. */
function resp(n: number): string {
  const parts: string[] = [];
  for (let i = 0; i < n; i++) {
    const k = keyOf(i), v = valueOf(i);
    parts.push(`*3\r\n$3\r\nSET\r\n$${k.length}\r\n${k}\r\n$${v.length}\r\n${v}\r\n`);
  }
  return parts.join('');
}

/** MGET of `sample` keys: every value as written. */
function checkSample(sample: number[], what: string): void {
  const got = cli(['--raw', 'MGET', ...sample.map(keyOf)]).trimEnd().split('\n');
  assert.deepEqual(got, sample.map(valueOf), `${what}: values of ${sample.length} random keys`);
}

test('redis-server with 200,000 keys: dump → kill → restore → every key answers', async () => {
  fx = await startProgram('redis', () => ['redis-server', '--port', String(PORT), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no']);
  await waitPort(PORT);
  const load = cli(['--pipe'], resp(KEYS));
  assert.match(load, new RegExp(`errors: 0, replies: ${KEYS}`), load);
  assert.equal(cli(['DBSIZE']).trim(), String(KEYS));
  const sample = Array.from({ length: 100 }, () => Math.floor(Math.random() * KEYS));
  checkSample(sample, 'before the dump');
  // redis-cli is gone: no connection left for the dump to refuse.
  await new Promise((r) => setTimeout(r, 50));
  assert.deepEqual(tcpSockets(PORT).filter((s) => s.state === 'ESTABLISHED'), [], 'no client connected');
  const fdsBefore = listFds(fx.pid);

  const dir = path.join(root, 'images');
  const { dump, restore } = await dumpKillRestore(fx, dir, {
    // the threads of redis are in the same process: nothing else to reap
    between: () => assert.deepEqual(descendantsOf(), []),
  });
  assert.match(dump.stderr, /\b\d+ threads\b/, dump.stderr);
  assert.deepEqual(listFds(fx.pid), fdsBefore, 'the same fds');
  assert.match(restore.stderr, /restored pid/);

  await waitPort(PORT);
  assert.equal(cli(['PING']).trim(), 'PONG');
  assert.equal(cli(['DBSIZE']).trim(), String(KEYS), 'every key is there');
  checkSample(sample, 'after the restore (the same keys)');
  checkSample(Array.from({ length: 100 }, () => Math.floor(Math.random() * KEYS)), 'after the restore (other keys)');
  assert.equal(cli(['SET', 'after', 'restore']).trim(), 'OK');
  assert.equal(cli(['INCR', 'counter']).trim(), '1');
  assert.equal(cli(['DBSIZE']).trim(), String(KEYS + 2));

  // A clean shutdown: redis exits 0 on SIGTERM (no save configured).
  const { status, log } = await fx.terminate();
  assert.match(log, /ready to exit, bye bye/i, log);
  assert.deepEqual(status, { kind: 'exited', pid: fx.pid, code: 0 }, log);
});
