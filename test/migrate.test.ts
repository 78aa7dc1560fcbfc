// stasis migrate / migrate-receive: pre-dumps while the tree runs, the final
// dump, the transfer over one TCP connection (pages as page server sessions),
// the restore on the receiving side, the downtime printed.
//
// Hosts: two network namespaces (A: the source's stasis, B: the receiver's)
// joined by a veth pair, the migration going over it. The service's own
// network (its container's namespace S, dumped as external, joined by the
// restore with --join-ns) is what stays: on one kernel it cannot exist twice
// with the same address, so the client's connection into it is the one the
// moved server takes over (TCP_REPAIR) — on two machines an orchestrator
// would re-create S there, as runc/podman do with criu.
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { Fixture, initHarness, tmpDir, buildFixture, STASIS, type CliResult } from './harness';
import { startProgram, makeHosts, dropHosts } from './net-helpers';
import { tryKill, abi } from '../src/sys';

const TAG = `stasis-mig-${process.pid}`;
const NS = { s: `${TAG}-s`, a: `${TAG}-a`, b: `${TAG}-b` };
const VETH = [`smA${process.pid % 100000}`, `smB${process.pid % 100000}`];
const ADDR = { a: '10.231.7.1', b: '10.231.7.2' };
const REDIS_PORT = 47391;
const KEYS = 200_000;

let root: string;
const started: Fixture[] = [];
const children: ChildProcess[] = [];

before(() => {
  initHarness();
  root = tmpDir('migrate');
  makeHosts(NS, VETH, ADDR);
});

after(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  for (const fx of started) await fx.kill();
  dropHosts(NS);
  fs.rmSync(root, { recursive: true, force: true });
});

const inNs = (ns: string, argv: string[]) => ['nsenter', `--net=/run/netns/${ns}`, ...argv];

function run(argv: string[]): { child: ChildProcess; done: Promise<CliResult>; out: () => string } {
  const child = spawn(argv[0], argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
  children.push(child);
  let stdout = '', stderr = '';
  child.stdout!.on('data', (d: Buffer) => { stdout += d.toString(); });
  child.stderr!.on('data', (d: Buffer) => { stderr += d.toString(); });
  const done = new Promise<CliResult>((resolve) => child.on('close', (status, signal) => resolve({ status, signal, stdout, stderr })));
  return { child, done, out: () => stdout };
}

async function until(what: string, f: () => boolean, timeoutMs = 30000): Promise<void> {
  const t0 = Date.now();
  while (!f()) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** The service's namespace: external to the dump, joined by the restore. */
const external = () => ['--external', `net[${fs.statSync(`/run/netns/${NS.s}`).ino}]:svc`];
const JOIN = ['--join-ns', `net:/run/netns/${NS.s}`];

/** The predump fixture, in the service's namespace. */
async function startInService(): Promise<Fixture> {
  const fx = await Fixture.startCommand('predump', (d) => inNs(NS.s, [buildFixture('predump'), d, '16']));
  started.push(fx);
  return fx;
}

/** migrate-receive in host B: the port from its readiness line. */
async function receiver(dir: string, extra: string[] = []): Promise<{ port: number; done: Promise<CliResult> }> {
  const r = run(inNs(NS.b, [process.execPath, STASIS, 'migrate-receive', '-D', dir, '--address', ADDR.b, '--port', '0', ...extra]));
  let port = 0;
  await until('the receiver to listen', () => {
    const m = /^stasis migrate-receive: listening on [\d.]+:(\d+)$/m.exec(r.out());
    if (m) port = Number(m[1]);
    return port > 0 || r.child.exitCode !== null;
  });
  assert.ok(port > 0, `receiver did not listen: ${r.out()}`);
  return { port, done: r.done };
}

/** stasis migrate in host A. */
function migrate(pid: number, port: number, extra: string[] = []): Promise<CliResult> {
  return run(inNs(NS.a, [process.execPath, STASIS, 'migrate', '-t', String(pid), '--to', `${ADDR.b}:${port}`, ...extra])).done;
}

test('migrate with two pre-dumps between network namespaces: the receiver restores the tree exactly; downtime printed', async () => {
  const fx = await startInService();
  const dir = path.join(root, 'fixture');
  const recv = await receiver(dir, JOIN);
  // The source kills its tree once the receiver holds it; we are its parent: reap it meanwhile.
  const reaped = fx.reap(120000).catch((e: Error) => e);
  const [src, dst] = await Promise.all([migrate(fx.pid, recv.port, ['--rounds', '2', ...external()]), recv.done]);
  assert.equal(src.status, 0, `migrate: ${src.stderr}`);
  assert.equal(dst.status, 0, `migrate-receive: ${dst.stderr}`);
  assert.equal(((await reaped) as { kind?: string }).kind, 'signaled', 'the source killed its tree');
  assert.match(src.stderr, /^migrate: pre-dump 1: \d+ pages sent/m);
  assert.match(src.stderr, /^migrate: pre-dump 2: \d+ pages sent/m);
  assert.match(src.stderr, new RegExp(`^migrated pid ${fx.pid} to ${ADDR.b.replace(/\./g, '\\.')}:${recv.port} \\(restored pid ${fx.pid}\\) after 2 pre-dump\\(s\\); final dump \\d+ pages; downtime \\d+\\.\\d ms \\(frozen here → running there\\)$`, 'm'));
  assert.deepEqual(fs.readdirSync(dir).sort(), ['1', '2', 'final']);
  assert.equal(fs.readlinkSync(path.join(dir, 'final', 'parent')), '../2');
  assert.ok(fs.existsSync(path.join(dir, 'final', 'pages-65537.img')));
  fx.restored();
  const { log } = await fx.terminate();
  assert.match(log, /^PASS$/m, `the migrated fixture checked its memory:\n${log}`);
});

test('a receiver that refuses the final checkpoint: migrate fails, the tree runs on unchanged', async () => {
  const fx = await startInService();
  const dir = path.join(root, 'refused');
  fs.mkdirSync(path.join(dir, 'final'), { recursive: true }); // already there: refused
  const recv = await receiver(dir, JOIN);
  const [src, dst] = await Promise.all([migrate(fx.pid, recv.port, ['--rounds', '1', ...external()]), recv.done]);
  assert.equal(src.status, 1, src.stderr);
  assert.equal(dst.status, 1, dst.stderr);
  assert.match(src.stderr, /^stasis: migration to [\d.:]+: the receiver refused the final checkpoint: .*final exists already \(migrate into a fresh directory\)$/m);
  assert.ok(fx.alive, 'the tree runs on');
  tryKill(fx.pid, abi.SIG.SIGUSR1);
  await fx.waitLog(/^STEP 1$/m);
  const { log } = await fx.terminate();
  assert.match(log, /^PASS$/m, log);
});

/** A client in the service's namespace on one connection: a command per stdin line, each reply a JSON line. */
const CLIENT = `
const net = require('net'); const rl = require('readline');
const s = net.connect(${REDIS_PORT}, '127.0.0.1', () => console.log(JSON.stringify({ connected: s.localPort })));
let buf = '';
s.on('data', (d) => { buf += d; let i; while ((i = buf.indexOf('\\r\\n')) >= 0) {
  const line = buf.slice(0, i); if (line[0] === '$' && line !== '$-1') { const n = Number(line.slice(1)); if (buf.length < i + 2 + n + 2) return;
    console.log(JSON.stringify({ reply: buf.slice(i + 2, i + 2 + n) })); buf = buf.slice(i + 4 + n); }
  else { console.log(JSON.stringify({ reply: line })); buf = buf.slice(i + 2); } } });
s.on('error', (e) => { console.log(JSON.stringify({ error: e.code })); process.exit(1); });
rl.createInterface({ input: process.stdin }).on('line', (l) => { const a = l.split(' ');
  s.write('*' + a.length + '\\r\\n' + a.map((x) => '$' + Buffer.byteLength(x) + '\\r\\n' + x + '\\r\\n').join('')); });
`;

test('redis-server with 200,000 keys and a connected client migrates between network namespaces; the connection keeps working', async () => {
  const fx = await startProgram('redis-mig', () => inNs(NS.s, ['redis-server', '--port', String(REDIS_PORT), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no']));
  started.push(fx);
  await until('redis to answer', () => spawnSync('nsenter', [`--net=/run/netns/${NS.s}`, 'redis-cli', '-p', String(REDIS_PORT), 'PING'], { encoding: 'utf8' }).stdout.trim() === 'PONG');
  const parts: string[] = [];
  for (let i = 0; i < KEYS; i++) {
    const k = `key:${i}`, v = `value-${i}`;
    parts.push(`*3\r\n$3\r\nSET\r\n$${k.length}\r\n${k}\r\n$${v.length}\r\n${v}\r\n`);
  }
  const fill = spawnSync('nsenter', [`--net=/run/netns/${NS.s}`, 'redis-cli', '-p', String(REDIS_PORT), '--pipe'], { input: parts.join(''), encoding: 'utf8', maxBuffer: 64 << 20 });
  assert.equal(fill.status, 0, fill.stderr);
  const client = run(inNs(NS.s, [process.execPath, '-e', CLIENT]));
  const replies = () => client.out().trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as { reply?: string; connected?: number; error?: string });
  const ask = async (cmd: string): Promise<string> => {
    const n = replies().length;
    client.child.stdin!.write(cmd + '\n');
    await until(`a reply to ${cmd}`, () => replies().length > n);
    const r = replies()[n];
    assert.equal(r.error, undefined, `client: ${r.error}`);
    return r.reply!;
  };
  await until('the client to connect', () => replies().length > 0);
  assert.equal(await ask('GET key:4242'), 'value-4242');
  const dir = path.join(root, 'redis');
  const recv = await receiver(dir, ['--join-ns', `net:/run/netns/${NS.s}`]);
  const ino = fs.statSync(`/run/netns/${NS.s}`).ino;
  const reaped = fx.reap(120000).catch((e: Error) => e);
  const [src, dst] = await Promise.all([migrate(fx.pid, recv.port, ['--rounds', '1', '--tcp-established', '--network-lock', 'skip', ...external()]), recv.done]);
  assert.equal(src.status, 0, `migrate: ${src.stderr}`);
  assert.equal(dst.status, 0, `migrate-receive: ${dst.stderr}`);
  assert.equal(((await reaped) as { kind?: string }).kind, 'signaled', 'the source killed its tree');
  const down = /downtime (\d+\.\d) ms \(frozen here → running there\)$/m.exec(src.stderr);
  assert.ok(down, src.stderr);
  console.log(`# redis migration: ${src.stderr.trim().split('\n').at(-1)}`);
  fx.restored();
  assert.equal(fs.readlinkSync(`/proc/${fx.pid}/ns/net`), `net:[${ino}]`, 'the server runs in the service namespace again');
  // The same connection, after the move.
  assert.equal(await ask('GET key:4242'), 'value-4242');
  assert.equal(await ask('DBSIZE'), `:${KEYS}`);
  assert.equal(await ask('SET after moved'), '+OK');
  assert.equal(await ask('GET key:199999'), 'value-199999');
  client.child.stdin!.end();
});
