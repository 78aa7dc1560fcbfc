// The network lock of `dump --tcp-established` (--network-lock): a peer
// outside the tree (this test process) sends a numbered line every 50 ms to
// a server inside it (fixtures/tcpserver.c) from before the dump until after
// the restore, the server being down for 2 s in between. With the lock the
// peer's packets are dropped meanwhile (not answered with a reset): after
// the restore every line is answered, in order, none lost, and the peer never
// saw an error. stasis runs asynchronously, so the peer goes on sending while
// the dump reads the queues and while the restore rebuilds the socket.
// On loopback the peer's segments are dropped at input (as on a wire: it
// retransmits on its RTO, backed off while the lock holds), so after the
// unlock it may take seconds to resume: waits are on conditions, generous.
//
// And the lock never stays behind: removed by the restore (but kept by a
// restore that fails before the unlock), by a failed dump, after -R; gone
// when the dump is SIGKILLed (nftables: the kernel drops the owner table;
// iptables: the watchdog clears it); `stasis netlock --clear` removes kept
// locks whose checkpoint is gone, `-D DIR` one checkpoint's. After each test
// no table, chain or rule of ours naming this test's images is left.
// A tree with a network namespace of its own is locked in that namespace
// (where its packets flow), never in ours, and nothing is kept: the
// namespace goes with the tree.
import { test, before, after, afterEach } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { Fixture, initHarness, tmpDir, waitFor, sleep, STASIS, describeCli, reapZombies, tracerPid, type CliResult } from './harness';
import { readImage } from '../src/images/image';
import { Client, startProgram } from './net-helpers';

const PORT = 47461; // up to +8
const DOWN_MS = 2000;
/** Generous: after the unlock the peer resumes at its next retransmission (backed off while locked). */
const CATCH_UP_MS = 60000;

let root: string;
const cleanup: (() => Promise<void> | void)[] = [];
/** Our stasis children while they run (libuv reaps them: reapZombies must leave them alone). */
const running = new Set<number>();
const fixtures: Fixture[] = [];

before(() => {
  initHarness();
  root = tmpDir('netlock');
});

afterEach(async () => {
  await waitFor(`no network lock naming ${root} (left: ${leftovers().join(' | ')})`, () => leftovers().length === 0, 10000, 50);
});

after(async () => {
  for (const f of cleanup.reverse()) await f();
  fs.rmSync(root, { recursive: true, force: true });
});

/** `stasis ARGS` in a child, without blocking our event loop (the peer keeps sending). */
function stasis(args: string[], env: Record<string, string> = {}): Promise<CliResult> {
  const e: NodeJS.ProcessEnv = { ...process.env, ...env };
  if (!env.STASIS_FAIL_AT) delete e.STASIS_FAIL_AT;
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [STASIS, ...args], { env: e, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '', stderr = '';
    running.add(p.pid!);
    p.stdout.setEncoding('utf8').on('data', (d: string) => { stdout += d; });
    p.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
    p.on('error', reject);
    p.on('close', (status, signal) => { running.delete(p.pid!); resolve({ status, signal, stdout, stderr }); });
  });
}

function sh(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  return r.status === 0 ? r.stdout : '';
}

/** An nft table as text (elements included), or '' when there is none. */
function nftTable(name: string): string {
  return sh('nft', ['list', 'table', 'inet', name]);
}

/** iptables and ip6tables rules and chains, as -S prints them. */
function iptLines(): string[] {
  return [...sh('iptables', ['-w', '-S']).split('\n'), ...sh('ip6tables', ['-w', '-S']).split('\n')];
}

/**
 * Every lock of this test's dumps still here: nft tables stasis-* whose
 * comment names our images (or named after `ids`), iptables chains and
 * jumps likewise.
 */
function leftovers(ids: string[] = []): string[] {
  const out: string[] = [];
  for (const m of sh('nft', ['list', 'tables']).matchAll(/^table inet (stasis-\S+)$/gm)) {
    const t = nftTable(m[1]);
    if (t.includes(`images=${root}`) || ids.some((id) => m[1].startsWith(`stasis-${id}`))) out.push(`nft table inet ${m[1]}`);
  }
  const lines = iptLines();
  const mine = new Set(ids);
  for (const l of lines) {
    const id = /STASIS-([0-9a-f]+)-/.exec(l)?.[1];
    if (id && l.includes(`images=${root}`)) mine.add(id);
  }
  for (const l of lines) if ([...mine].some((id) => l.includes(`STASIS-${id}-`))) out.push(l);
  return out;
}

interface Conn { fx: Fixture; client: Client; port: number; cport: number }

async function connect(port: number): Promise<Conn> {
  const fx = await Fixture.start('tcpserver', { extraFds: true, args: [String(port)] });
  fixtures.push(fx);
  cleanup.push(() => fx.kill());
  const client = await Client.connect({ host: '127.0.0.1', port });
  cleanup.push(() => client.destroy());
  await fx.waitLog(/^ACCEPTED$/m);
  await client.write('ECHO hello\n');
  await client.waitText(/^hello #1\n$/);
  return { fx, client, port, cport: client.sock.localPort! };
}

/** The peer: "ECHO Lk" every 50 ms; the server answers "Lk #(k+1)" (#1 was the hello). */
class Peer {
  sent = 0;
  private timer?: NodeJS.Timeout;
  constructor(readonly c: Conn) {}

  start(): this {
    this.timer = setInterval(() => { this.c.client.sock.write(`ECHO L${++this.sent}\n`); }, 50);
    return this;
  }

  stop(): void { clearInterval(this.timer); }

  expected(): string {
    let s = 'hello #1\n';
    for (let k = 1; k <= this.sent; k++) s += `L${k} #${k + 1}\n`;
    return s;
  }

  /** Once stopped: every line sent answered, in order, nothing else (and no error event). */
  async allAnswered(timeoutMs: number): Promise<void> {
    const want = this.expected();
    await waitFor(`answers to L1..L${this.sent} (have ${JSON.stringify(this.c.client.text().slice(-120))}, events ${this.c.client.events.join(', ')})`,
      () => this.c.client.text().length >= want.length || this.c.client.events.length > 0, timeoutMs, 20);
    assert.deepEqual(this.c.client.events, [], 'the peer saw no error, reset or close');
    assert.equal(this.c.client.text(), want, 'every line answered once, in order: no gap');
  }

  /** The server is answering: at least `more` new lines answered from now. */
  async flowing(more = 3, timeoutMs = 10000): Promise<void> {
    const k = this.sent + more;
    await waitFor(`the answer to L${k} (events ${this.c.client.events.join(', ')})`, () => this.c.client.text().includes(`\nL${k} #`), timeoutMs, 20);
  }
}

/** Stop the peer, have everything answered, BYE, and the server's own verdict: PASS. */
async function finish(p: Peer): Promise<void> {
  p.stop();
  await p.allAnswered(CATCH_UP_MS);
  const { client, fx } = p.c;
  await client.write('BYE\n');
  await client.waitText(new RegExp(`\\nBYE #${p.sent + 2}\\n$`));
  client.sock.end();
  await fx.waitLog(/^CLOSED$/m);
  const { status, log } = await fx.terminate();
  assert.match(log, /^PASS$/m, log);
  assert.doesNotMatch(log, /FAIL/, log);
  assert.deepEqual(status, { kind: 'exited', pid: fx.pid, code: 0 });
}

function inventory(dir: string) {
  return readImage(dir, 'inventory.img', 'INVENTORY', 'inventory_entry')[0];
}

/** A connection of ours unrelated to the dumped one works while the lock holds. */
async function otherConnectionWorks(): Promise<void> {
  const srv = net.createServer((s) => s.pipe(s));
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  try {
    const c = await Client.connect({ host: '127.0.0.1', port: (srv.address() as net.AddressInfo).port });
    await c.write('ping\n');
    await c.waitText(/^ping\n$/);
    c.destroy();
  } finally {
    srv.close();
  }
}

async function dumpOk(c: Conn, dir: string, extra: string[] = []): Promise<CliResult> {
  const r = await stasis(['dump', '-t', String(c.fx.pid), '-D', dir, '--tcp-established', ...extra]);
  assert.equal(r.status, 0, describeCli(r));
  return r;
}

async function restoreOk(c: Conn, dir: string, extra: string[] = []): Promise<CliResult> {
  const r = await stasis(['restore', '-D', dir, '-d', ...extra]);
  assert.equal(r.status, 0, describeCli(r));
  assert.match(r.stderr, new RegExp(`^restored pid ${c.fx.pid}\\b`, 'm'));
  c.fx.restored();
  return r;
}

test('nftables (the default here): 2 s down, the peer sending throughout; no gap, no reset; a restore failing before the unlock keeps the lock', async () => {
  const c = await connect(PORT);
  const peer = new Peer(c).start();
  await peer.flowing();
  const dir = path.join(root, 'nft');
  await dumpOk(c, dir);
  await c.fx.reap();

  const inv = inventory(dir);
  assert.equal(inv.network_lock_method, 1, 'NETWORK_LOCK_NFTABLES in the inventory');
  const id = inv.dump_criu_run_id!;
  assert.match(id, /^[0-9a-f]{12}$/);
  // The kept lock: our table, this one connection (peer . port . local . port), nothing else.
  const t = nftTable(`stasis-${id}`);
  assert.match(t, new RegExp(`comment "stasis pid=\\d+ images=${dir}"`));
  assert.match(t, new RegExp(`elements = \\{ 127\\.0\\.0\\.1 \\. ${c.cport} \\. 127\\.0\\.0\\.1 \\. ${c.port} \\}`));
  assert.doesNotMatch(t.replace(/set conns4[\s\S]*?\}\n/, ''), /elements/, 'no other element');
  assert.equal(nftTable(`stasis-${id}-dumping`), '', 'the dump\'s own table went with it');
  await otherConnectionWorks();
  await sleep(DOWN_MS);
  assert.deepEqual(c.client.events, [], 'the peer saw nothing while the server was down');

  const failed = await stasis(['restore', '-D', dir, '-d'], { STASIS_FAIL_AT: 'network-unlock' });
  assert.equal(failed.status, 1, describeCli(failed));
  assert.match(failed.stderr, /failure injected at restore phase network-unlock/);
  assert.ok(!fs.existsSync(`/proc/${c.fx.pid}`), 'the failed restore left no process');
  assert.notEqual(nftTable(`stasis-${id}`), '', 'the lock waits for the next attempt');

  await restoreOk(c, dir);
  assert.equal(nftTable(`stasis-${id}`), '', 'removed by the restore');
  assert.equal(tracerPid(c.fx.pid), 0);
  await peer.flowing(3, CATCH_UP_MS);
  await finish(peer);
  assert.deepEqual(leftovers([id]), []);
});

test('iptables: 2 s down, no gap, no reset; restore --network-lock skip is ignored (as criu): the dump\'s lock is removed', async () => {
  const c = await connect(PORT + 1);
  const peer = new Peer(c).start();
  await peer.flowing();
  const dir = path.join(root, 'ipt');
  await dumpOk(c, dir, ['--network-lock', 'iptables']);
  await c.fx.reap();

  const inv = inventory(dir);
  assert.equal(inv.network_lock_method, 0, 'NETWORK_LOCK_IPTABLES in the inventory');
  const id = inv.dump_criu_run_id!;
  const rules = iptLines().filter((l) => l.includes(`STASIS-${id}-`)).sort();
  assert.deepEqual(rules, [
    `-A INPUT -m comment --comment "stasis pid=${/pid=(\d+)/.exec(rules[0])?.[1]} images=${dir}" -j STASIS-${id}-IN`,
    `-A OUTPUT -m comment --comment "stasis pid=${/pid=(\d+)/.exec(rules[0])?.[1]} images=${dir}" -j STASIS-${id}-OUT`,
    `-A STASIS-${id}-IN -s 127.0.0.1/32 -d 127.0.0.1/32 -p tcp -m tcp --sport ${c.cport} --dport ${c.port} -j DROP`,
    `-A STASIS-${id}-OUT -s 127.0.0.1/32 -d 127.0.0.1/32 -p tcp -m tcp --sport ${c.port} --dport ${c.cport} -j DROP`,
    `-N STASIS-${id}-IN`,
    `-N STASIS-${id}-OUT`,
  ]);
  assert.equal(nftTable(`stasis-${id}`), '');
  await otherConnectionWorks();
  await sleep(DOWN_MS);
  assert.deepEqual(c.client.events, []);

  const r = await restoreOk(c, dir, ['--network-lock', 'skip']);
  assert.match(r.stderr, /warning: --network-lock skip is ignored on restore: the dump's lock \(iptables\) decides/);
  assert.deepEqual(leftovers([id]), [], 'removed by the restore');
  await finish(peer);
});

test('dump -R: the lock covers the dump only; the connection goes on, nothing lost, nothing left', async () => {
  const c = await connect(PORT + 2);
  const peer = new Peer(c).start();
  await peer.flowing();
  const dir = path.join(root, 'running');
  const r = await dumpOk(c, dir, ['-R', '-o', 'dump.log', '-v4']);
  assert.match(r.stderr, /left running/);
  assert.match(fs.readFileSync(path.join(dir, 'dump.log'), 'utf8'), new RegExp(`network lock \\(nftables\\): 127\\.0\\.0\\.1:${c.cport} → 127\\.0\\.0\\.1:${c.port}`));
  assert.deepEqual(leftovers(), [], 'unlocked as the dump ended');
  const inv = inventory(dir);
  assert.equal(inv.network_lock_method, 1);
  assert.equal(inv.dump_criu_run_id, undefined, 'no lock waits for these images');
  assert.equal(tracerPid(c.fx.pid), 0);
  await peer.flowing();
  await finish(peer);
});

for (const [i, method] of (['nftables', 'iptables'] as const).entries()) {
  test(`${method}: a dump failing after the lock removes it; the connection goes on`, async () => {
    const c = await connect(PORT + 3 + i);
    const peer = new Peer(c).start();
    await peer.flowing();
    const dir = path.join(root, `failed-${method}`);
    fs.mkdirSync(dir, { mode: 0o700 });
    const r = await stasis(['dump', '-t', String(c.fx.pid), '-D', dir, '--tcp-established', '--network-lock', method, '-o', 'dump.log', '-v4'], { STASIS_FAIL_AT: 'write-files' });
    assert.equal(r.status, 1, describeCli(r));
    assert.match(r.stderr, /failure injected at dump phase write-files/);
    assert.match(fs.readFileSync(path.join(dir, 'dump.log'), 'utf8'), new RegExp(`network lock \\(${method}\\): 127\\.0\\.0\\.1:${c.cport} →`), 'it was locked');
    assert.deepEqual(leftovers(), [], 'and unlocked');
    assert.equal(tracerPid(c.fx.pid), 0);
    await peer.flowing();
    await finish(peer);
  });
}

for (const [i, method] of (['nftables', 'iptables'] as const).entries()) {
  test(`${method}: a dump SIGKILLed after the lock leaves none behind (${method === 'nftables' ? 'the kernel drops its owner table' : 'its watchdog clears the chains'})`, async () => {
    const c = await connect(PORT + 5 + i);
    const dir = path.join(root, `killed-${method}`);
    fs.mkdirSync(dir, { mode: 0o700 });
    const r = await stasis(['dump', '-t', String(c.fx.pid), '-D', dir, '--tcp-established', '--network-lock', method, '-o', 'dump.log', '-v4'], { STASIS_FAIL_AT: 'inventory:kill' });
    assert.equal(r.signal, 'SIGKILL', describeCli(r));
    assert.match(fs.readFileSync(path.join(dir, 'dump.log'), 'utf8'), new RegExp(`network lock \\(${method}\\): 127\\.0\\.0\\.1:${c.cport} →`), 'it was locked');
    await waitFor(`the lock gone (left: ${leftovers().join(' | ')})`, () => leftovers().length === 0, 20000, 50);
    // The watchdog (iptables) was re-parented to us when the dump died.
    reapZombies([...fixtures.map((f) => f.pid), ...running]);
    // The server goes on, its connection stuck in repair mode (what a killed dump leaves; not the lock's doing).
    await c.fx.kill();
  });
}

test('stasis netlock: a kept lock waits for its checkpoint; --clear removes it once the checkpoint is gone; --clear -D DIR gives one up', async () => {
  const a = await connect(PORT + 7);
  const b = await connect(PORT + 8);
  const dirA = path.join(root, 'kept-a');
  const dirB = path.join(root, 'kept-b');
  await dumpOk(a, dirA);
  await dumpOk(b, dirB, ['--network-lock', 'iptables']);
  await a.fx.reap();
  await b.fx.reap();
  const idA = inventory(dirA).dump_criu_run_id!, idB = inventory(dirB).dump_criu_run_id!;

  let l = await stasis(['netlock']);
  assert.equal(l.status, 0, describeCli(l));
  assert.match(l.stdout, new RegExp(`^${idA}  nftables inet stasis-${idA}  waiting: waits for stasis restore -D ${dirA}$`, 'm'));
  assert.match(l.stdout, new RegExp(`^${idB}  iptables chains STASIS-${idB}-IN/OUT  waiting: waits for stasis restore -D ${dirB}$`, 'm'));
  l = await stasis(['netlock', '--clear']);
  assert.equal(l.status, 0, describeCli(l));
  assert.doesNotMatch(l.stdout, new RegExp(`${idA}|${idB}`), 'nothing of ours is stale');
  assert.equal(leftovers([idA, idB]).length, 7, 'both locks still there (a table; two chains, two rules and two jumps)');

  // Checkpoint A is deleted: its lock is stale.
  fs.rmSync(dirA, { recursive: true });
  l = await stasis(['netlock']);
  assert.match(l.stdout, new RegExp(`^${idA}  nftables inet stasis-${idA}  stale: no checkpoint in ${dirA} waits on it$`, 'm'));
  l = await stasis(['netlock', '--clear']);
  assert.match(l.stdout, new RegExp(`^removed nftables table inet stasis-${idA}$`, 'm'));
  assert.equal(nftTable(`stasis-${idA}`), '');
  // Checkpoint B is given up.
  l = await stasis(['netlock', '--clear', '-D', dirB]);
  assert.equal(l.status, 0, describeCli(l));
  assert.equal(l.stdout, `removed iptables chains STASIS-${idB}-IN, STASIS-${idB}-OUT\n`);
  assert.deepEqual(leftovers([idA, idB]), []);
});

/**
 * One python process in a network namespace of its own (unshare from
 * ctypes), both ends of a loopback connection: every 50 ms a numbered line
 * one way and back ("OK n" in its log; "FAIL ..." at the first wrong one);
 * SIGTERM: PASS.
 */
const NETNS_PEERS = String.raw`
import ctypes, signal, socket, subprocess, sys, time
if ctypes.CDLL(None, use_errno=True).unshare(0x40000000) != 0: print('FAIL unshare', ctypes.get_errno(), flush=True); sys.exit(1)
subprocess.run(['ip', 'link', 'set', 'lo', 'up'], check=True)
stop = False
def term(*_):
    global stop
    stop = True
signal.signal(signal.SIGTERM, term)
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); l.bind(('127.0.0.1', 7000)); l.listen(1)
c = socket.create_connection(('127.0.0.1', 7000)); s, _ = l.accept()
for x in (c, s): x.settimeout(120)
print('UP', c.getsockname()[1], flush=True)
n = 0
while not stop:
    n += 1
    try:
        c.sendall(b'L%d\n' % n)
        got = b''
        while not got.endswith(b'\n'): got += s.recv(100)
        s.sendall(got)
        back = b''
        while not back.endswith(b'\n'): back += c.recv(100)
    except Exception as e:
        print('FAIL', repr(e), flush=True); sys.exit(1)
    if back != b'L%d\n' % n: print('FAIL', back, n, flush=True); sys.exit(1)
    print('OK', n, flush=True)
    time.sleep(0.05)
print('PASS', flush=True)
`;

function lastOk(fx: Fixture): number {
  const all = [...fx.log().matchAll(/^OK (\d+)$/gm)];
  return all.length ? Number(all[all.length - 1][1]) : 0;
}

test('a tree in a network namespace of its own: locked in that namespace (never ours), removed with -R, nothing kept when killed; the connection carries on', async () => {
  const fx = await startProgram('netns-peers', () => ['python3', '-u', '-c', NETNS_PEERS]);
  fixtures.push(fx);
  cleanup.push(() => fx.kill());
  const up = await fx.waitLog(/^UP (\d+)$/m);
  const cport = Number(up[1]);
  await waitFor('a few round trips', () => lastOk(fx) >= 3, 10000);
  const ownNs = (p: number) => fs.readlinkSync(`/proc/${p}/ns/net`);
  assert.notEqual(ownNs(fx.pid), ownNs(process.pid));
  const nftThere = () => spawnSync('nsenter', [`--net=/proc/${fx.pid}/ns/net`, 'nft', 'list', 'tables'], { encoding: 'utf8' }).stdout;
  const lockLine = (m: string) => new RegExp(`network lock \\(${m}, in the tree's network namespace\\): 127\\.0\\.0\\.1:${cport} → 127\\.0\\.0\\.1:7000`);

  // -R: locked there during the dump, unlocked after; the round trips go on.
  for (const method of ['nftables', 'iptables']) {
    const dir = path.join(root, `netns-running-${method}`);
    const r = await stasis(['dump', '-t', String(fx.pid), '-D', dir, '-R', '--tcp-established', '--network-lock', method, '-o', 'dump.log', '-v4']);
    assert.equal(r.status, 0, describeCli(r));
    assert.match(fs.readFileSync(path.join(dir, 'dump.log'), 'utf8'), lockLine(method));
    assert.doesNotMatch(nftThere(), /stasis-/, 'nothing left in its namespace');
    const there = spawnSync('nsenter', [`--net=/proc/${fx.pid}/ns/net`, 'iptables', '-w', '-S'], { encoding: 'utf8' }).stdout;
    assert.doesNotMatch(there, /STASIS-/);
    assert.equal(inventory(dir).dump_criu_run_id, undefined);
    const k = lastOk(fx);
    await waitFor(`round trip ${k + 3}`, () => lastOk(fx) >= k + 3, 10000);
  }

  // Killed and restored: no lock kept (its namespace went with it), none ever in ours.
  const dir = path.join(root, 'netns');
  const d = await stasis(['dump', '-t', String(fx.pid), '-D', dir, '--tcp-established', '-o', 'dump.log', '-v4']);
  assert.equal(d.status, 0, describeCli(d));
  await fx.reap();
  assert.match(fs.readFileSync(path.join(dir, 'dump.log'), 'utf8'), lockLine('nftables'));
  assert.deepEqual(leftovers(), []);
  const inv = inventory(dir);
  assert.equal(inv.network_lock_method, 1);
  assert.equal(inv.dump_criu_run_id, undefined, 'no lock waits for this restore');
  const k = lastOk(fx);
  await sleep(DOWN_MS);
  await restoreOk({ fx } as Conn, dir);
  assert.notEqual(ownNs(fx.pid), ownNs(process.pid), 'a network namespace of its own again');
  await waitFor(`round trip ${k + 5} after the restore (log tail ${fx.log().slice(-200)})`, () => lastOk(fx) >= k + 5 || /FAIL/.test(fx.log()), CATCH_UP_MS);
  const { status, log } = await fx.terminate();
  assert.doesNotMatch(log, /FAIL/, log);
  assert.match(log, /^PASS$/m, log);
  assert.deepEqual(status, { kind: 'exited', pid: fx.pid, code: 0 });
});
