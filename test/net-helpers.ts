// Helpers shared by the files-*, sockets-* and real-* tests (harness.ts is
// shared with other test files and left alone): file snapshots, programs
// started like fixtures, TCP/UDP/HTTP clients living in the test process
// (outside every dumped tree), and a dump → reap → restore cycle.
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as http from 'node:http';
import * as path from 'node:path';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import {
  Fixture, runStasis, describeCli, restoreDetached, waitGone, waitFor, descendantsOf, cmdline, tracerPid, procState, type CliResult,
  type StartOptions,
} from './harness';
import { sys, sysTry, addressOf } from '../src/sys';

// ---------------------------------------------------------------- files

/** Every regular file under `dir` with its bytes (to put back before each restore). */
export type Snapshot = Map<string, Buffer>;

export function snapshotFiles(dir: string): Snapshot {
  const out: Snapshot = new Map();
  const walk = (d: string): void => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) out.set(p, fs.readFileSync(p));
    }
  };
  walk(dir);
  return out;
}

/**
 * Put the files back as they were at the dump (same inodes: rewritten in
 * place). A restored task writes on from its dumped offsets, and a file that
 * changed size would (rightly) be refused by the restore.
 */
export function putBack(snap: Snapshot): void {
  for (const [p, b] of snap) fs.writeFileSync(p, b);
}

// ---------------------------------------------------------------- processes

/**
 * Any program started like a fixture (double fork, setsid, stdio on the log
 * of its scratch dir, re-parented to us): a shell prints the PID/READY
 * manifest and execs `argv(dir)` under the same pid. The program is not
 * ready yet when this returns: wait for its port.
 */
export async function startProgram(name: string, argv: (dir: string) => string[], opts: StartOptions & { cwd?: (dir: string) => string } = {}): Promise<Fixture> {
  return Fixture.startCommand(name, (dir) => [
    '/bin/sh', '-c', 'cd "$1" && shift && echo PID $$ && echo READY && exec "$@"', 'sh', opts.cwd ? opts.cwd(dir) : dir, ...argv(dir),
  ], { extraFds: true, ...opts });
}

/** `stasis dump`; asserts success. */
export function dumpOk(pid: number, dir: string, extra: string[] = []): CliResult {
  const r = runStasis(['dump', '-t', String(pid), '-D', dir, ...extra]);
  assert.equal(r.status, 0, describeCli(r));
  return r;
}

/**
 * Dump (killing the tree), reap every process of it (the root and the
 * descendants re-parented to us), check nothing of it is left, restore
 * detached; returns the restore's CLI result.
 */
export async function dumpKillRestore(fx: Fixture, dir: string, opts: { tree?: number[]; dumpArgs?: string[]; restoreArgs?: string[]; between?: () => void | Promise<void> } = {}): Promise<{ dump: CliResult; restore: CliResult }> {
  const pids = [fx.pid, ...(opts.tree ?? [])];
  const dump = dumpOk(fx.pid, dir, opts.dumpArgs);
  await fx.reap();
  await waitGone(pids, 5000);
  assert.deepEqual(descendantsOf().map((p) => `${p} ${cmdline(p)}`), [], 'nothing of the dumped tree is left');
  await opts.between?.();
  const { pid, r } = restoreDetached(dir, opts.restoreArgs);
  fx.restored();
  assert.equal(pid, fx.pid, 'restored under its pid');
  return { dump, restore: r };
}

/**
 * The whole round trip of a self-checking C fixture: started, dumped (killed),
 * restored detached under its pid (dumpKillRestore), then SIGTERMed: it must
 * print PASS.
 */
export async function fixtureRoundTrip(name: string, dir: string, opts: StartOptions = {}): Promise<void> {
  const fx = await Fixture.start(name, opts);
  try {
    await dumpKillRestore(fx, dir);
    const { log } = await fx.terminate();
    assert.match(log, /^PASS$/m, log);
  } finally {
    await fx.kill();
  }
}

/**
 * Start fixture `name` with `args`, have its dump into `dir` refused with one
 * line matching `re`; the process is let go untouched (no checkpoint, not
 * traced, running) and still prints PASS.
 */
export async function fixtureRefused(name: string, args: string[], dir: string, re: RegExp, opts: StartOptions = {}): Promise<void> {
  const fx = await Fixture.start(name, { ...opts, args });
  try {
    assertOneLineError(runStasis(['dump', '-t', String(fx.pid), '-D', dir]), re);
    assert.ok(!fs.existsSync(path.join(dir, 'inventory.img')), 'no inventory: not a checkpoint');
    assert.equal(tracerPid(fx.pid), 0, 'released');
    assert.match(procState(fx.pid), /^[RS]$/, 'running');
    const { log } = await fx.terminate();
    assert.match(log, /^PASS$/m, log);
  } finally {
    await fx.kill();
  }
}

/** The one stderr line `stasis: ...` of a refused command, checked for `re`. */
export function assertOneLineError(r: CliResult, re: RegExp): void {
  assert.equal(r.status, 1, describeCli(r));
  const lines = r.stderr.trimEnd().split('\n');
  assert.equal(lines.length, 1, `one line on stderr: ${r.stderr}`);
  assert.match(lines[0], /^stasis: /);
  assert.doesNotMatch(r.stderr, /internal error|^\s+at /m, 'no stack trace');
  assert.match(lines[0], re);
}

// ---------------------------------------------------------------- network

/** ip(8), which must succeed. */
export function ip(args: string[]): void {
  const r = spawnSync('ip', args, { encoding: 'utf8' });
  assert.equal(r.status, 0, `ip ${args.join(' ')}: ${r.stderr}`);
}

/**
 * "Hosts" for migration tests: network namespaces `ns` (lo up in each), and
 * a veth pair joining ns.a (addr.a/24) and ns.b (addr.b/24).
 */
export function makeHosts(ns: Record<string, string> & { a: string; b: string }, veth: string[], addr: { a: string; b: string }): void {
  for (const n of Object.values(ns)) ip(['netns', 'add', n]);
  for (const n of Object.values(ns)) ip(['-n', n, 'link', 'set', 'lo', 'up']);
  ip(['link', 'add', veth[0], 'type', 'veth', 'peer', 'name', veth[1]]);
  ip(['link', 'set', veth[0], 'netns', ns.a]);
  ip(['link', 'set', veth[1], 'netns', ns.b]);
  ip(['-n', ns.a, 'addr', 'add', `${addr.a}/24`, 'dev', veth[0]]);
  ip(['-n', ns.b, 'addr', 'add', `${addr.b}/24`, 'dev', veth[1]]);
  ip(['-n', ns.a, 'link', 'set', veth[0], 'up']);
  ip(['-n', ns.b, 'link', 'set', veth[1], 'up']);
}

/** The namespaces of makeHosts gone (the veth pair with them). */
export function dropHosts(ns: Record<string, string>): void {
  for (const n of Object.values(ns)) spawnSync('ip', ['netns', 'delete', n]);
}

/** Resolves once something accepts TCP connections on host:port. */
export async function waitPort(port: number, host = '127.0.0.1', timeoutMs = 10000): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect({ port, host });
      s.once('connect', () => { s.destroy(); resolve(true); });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > end) throw new Error(`nothing listens on ${host}:${port} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** True when nothing listens on the port and it can be bound. */
export async function portFree(port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', () => resolve(false));
    srv.listen({ port, host, exclusive: true }, () => srv.close(() => resolve(true)));
  });
}

/**
 * A TCP client of ours: collects everything received, records 'end',
 * 'close' and 'error', and can wait for text.
 */
export class Client {
  readonly sock: net.Socket;
  private chunks: Buffer[] = [];
  /** Bytes held now (what data() returns): since the connection or the last clear(). */
  private held = 0;
  /** Bytes received over the connection's whole life (clear() leaves it alone). */
  received = 0;
  events: string[] = [];

  private constructor(sock: net.Socket) {
    this.sock = sock;
    sock.on('data', (d: Buffer) => { this.chunks.push(d); this.held += d.length; this.received += d.length; });
    sock.on('end', () => this.events.push('end'));
    sock.on('close', (hadError: boolean) => this.events.push(`close${hadError ? ' (error)' : ''}`));
    sock.on('error', (e: Error) => this.events.push(`error ${e.message}`));
  }

  static connect(opts: net.NetConnectOpts): Promise<Client> {
    return new Promise((resolve, reject) => {
      const s = net.connect(opts);
      s.once('connect', () => { s.removeListener('error', reject); resolve(new Client(s)); });
      s.once('error', reject);
    });
  }

  data(): Buffer {
    if (this.chunks.length > 1) this.chunks = [Buffer.concat(this.chunks)];
    return this.chunks[0] ?? Buffer.alloc(0);
  }

  text(): string { return this.data().toString('latin1'); }

  /** Drop what was received so far (waitBytes counts from here). */
  clear(): void { this.chunks = []; this.held = 0; }

  async waitText(re: RegExp, timeoutMs = 5000): Promise<RegExpExecArray> {
    return waitFor(`/${re.source}/ from the server (got ${JSON.stringify(this.text().slice(-200))}, events ${this.events.join(', ')})`,
      () => re.exec(this.text()) ?? undefined, timeoutMs, 5);
  }

  /**
   * Wait until data() holds at least n bytes (counted since the last clear(),
   * not over the connection's life: else it returns early, with a short
   * buffer, once more than n bytes came in before the clear).
   */
  async waitBytes(n: number, timeoutMs = 10000): Promise<Buffer> {
    await waitFor(`${n} bytes from the server (have ${this.held})`, () => this.held >= n, timeoutMs, 5);
    return this.data();
  }

  write(b: string | Buffer): Promise<void> {
    return new Promise((resolve, reject) => this.sock.write(b, (e) => (e ? reject(e) : resolve())));
  }

  destroy(): void { this.sock.destroy(); }
}

/**
 * Connect to a unix stream socket by raw name (an abstract name starts with
 * a NUL; Node's net module cannot reach those) and read until EOF: through a
 * python3 client, outside every dumped tree.
 */
export function unixReadAll(name: Buffer, timeoutMs = 5000): string {
  const script = [
    'import socket, sys',
    's = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)',
    's.settimeout(float(sys.argv[2]))',
    's.connect(bytes.fromhex(sys.argv[1]))',
    'out = b""',
    'while True:',
    '    b = s.recv(4096)',
    '    if not b: break',
    '    out += b',
    'sys.stdout.write(out.decode("latin1"))',
  ].join('\n');
  const r = spawnSync('python3', ['-c', script, name.toString('hex'), String(timeoutMs / 1000)], { encoding: 'utf8', timeout: timeoutMs + 2000 });
  if (r.status !== 0) throw new Error(`unix client of ${JSON.stringify(name.toString('latin1'))}: status ${r.status}: ${r.stderr}`);
  return r.stdout;
}

/**
 * A unix stream listener of this test process that never accepts: whoever
 * connects stays in its accept queue (its peer has no socket inode yet).
 */
export function silentUnixListener(sockPath: string): { fd: number; close: () => void } {
  const AF_UNIX = 1, SOCK_STREAM = 1, SOCK_CLOEXEC = 0o2000000;
  const fd = sys('socket', AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const a = Buffer.alloc(110);
  a.writeUInt16LE(AF_UNIX, 0);
  a.write(sockPath, 2);
  sys('bind', fd, addressOf(a), 2 + Buffer.byteLength(sockPath) + 1);
  sys('listen', fd, 8);
  return { fd, close: () => { sysTry('close', fd); } };
}

/** One request over a fresh connection (no keep-alive): status and body. */
export function httpGet(port: number, urlPath: string, timeoutMs = 5000): Promise<{ status: number; body: string; headers: http.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: urlPath, agent: false, timeout: timeoutMs, headers: { connection: 'close' } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (d: Buffer) => chunks.push(d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString(), headers: res.headers }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${urlPath} on port ${port}: timed out`)));
    req.on('error', reject);
  });
}

const TCP_STATES: Record<string, string> = {
  '01': 'ESTABLISHED', '02': 'SYN_SENT', '03': 'SYN_RECV', '04': 'FIN_WAIT1', '05': 'FIN_WAIT2', '06': 'TIME_WAIT',
  '07': 'CLOSE', '08': 'CLOSE_WAIT', '09': 'LAST_ACK', '0A': 'LISTEN', '0B': 'CLOSING',
};

export interface TcpRow { state: string; recvQ: number; sendQ: number; localPort: number; peerPort: number; inode: number }

/**
 * TCP sockets (IPv4 and IPv6) whose local port is `port`, from
 * /proc/net/tcp{,6}: state, bytes queued to read (recvQ) and sent but not
 * acknowledged or not sent yet (sendQ), ports, inode.
 */
export function tcpSockets(port: number): TcpRow[] {
  const out: TcpRow[] = [];
  for (const f of ['/proc/net/tcp', '/proc/net/tcp6']) {
    for (const line of fs.readFileSync(f, 'utf8').split('\n').slice(1)) {
      const w = line.trim().split(/\s+/);
      if (w.length < 10) continue;
      const localPort = parseInt(w[1].split(':')[1], 16);
      if (localPort !== port) continue;
      const [tx, rx] = w[4].split(':').map((x) => parseInt(x, 16));
      out.push({ state: TCP_STATES[w[3]] ?? w[3], recvQ: rx, sendQ: tx, localPort, peerPort: parseInt(w[2].split(':')[1], 16), inode: Number(w[9]) });
    }
  }
  return out;
}
