// Page server (criu's page-server / dump --page-server): pages go over TCP
// to `stasis page-server`, the other images are written where the dump
// runs; the two sets put together verify and restore exactly (the predump
// fixture checks every byte of its memory). A transfer that breaks off fails
// the dump and leaves the target running unchanged; a receiver whose sender
// went away keeps nothing.
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { Fixture, initHarness, runStasis, describeCli, tmpDir, loadDumpedMemory, reap, STASIS, type CliResult } from './harness';
import { startPredump, step, ok, pageCounts, restoreAndCheck } from './predump-helpers';

const FIRST_PAGES = 'pages-65537.img';

let root: string;
const started: Fixture[] = [];
const servers: ChildProcess[] = [];

before(() => {
  initHarness();
  root = tmpDir('page-server');
});

after(async () => {
  for (const fx of started) await fx.kill();
  for (const s of servers) if (s.exitCode === null && s.signalCode === null) s.kill('SIGKILL');
  fs.rmSync(root, { recursive: true, force: true });
});

interface Server { port: number; done: Promise<{ code: number | null; stderr: string }> }

/** `stasis page-server --port 0`: its port from the line it prints once listening. */
async function pageServer(dir: string, extra: string[] = []): Promise<Server> {
  const child = spawn(process.execPath, [STASIS, 'page-server', '-D', dir, '--address', '127.0.0.1', '--port', '0', ...extra], { stdio: ['ignore', 'pipe', 'pipe'] });
  servers.push(child);
  let out = '', err = '';
  child.stderr!.on('data', (d: Buffer) => { err += d.toString(); });
  const done = new Promise<{ code: number | null; stderr: string }>((resolve) => child.on('close', (code) => resolve({ code, stderr: err })));
  const port = await new Promise<number>((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /^stasis page-server: listening on 127\.0\.0\.1:(\d+)$/m.exec(out);
      if (m) resolve(Number(m[1]));
    });
    void done.then((r) => reject(new Error(`page server exited ${r.code} before listening: ${r.stderr}`)));
  });
  return { port, done };
}

const start = () => startPredump(started);

/** What a user does: the sender's images and the page server's in one directory. */
function combine(sender: string, received: string, into: string): string {
  fs.cpSync(received, into, { recursive: true, verbatimSymlinks: true });
  fs.cpSync(sender, into, { recursive: true, verbatimSymlinks: true, force: true });
  return into;
}

/** The CLI in a child, without blocking our event loop (a receiver of ours must go on serving meanwhile). */
function runStasisAsync(args: string[]): Promise<CliResult> {
  const child = spawn(process.execPath, [STASIS, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '', stderr = '';
  child.stdout!.on('data', (d: Buffer) => { stdout += d.toString(); });
  child.stderr!.on('data', (d: Buffer) => { stderr += d.toString(); });
  return new Promise((resolve) => child.on('close', (status, signal) => resolve({ status, signal, stdout, stderr })));
}

function files(dir: string): string[] { return fs.readdirSync(dir).sort(); }

test('pre-dump and dump through page servers: pages there, the rest here; put together, the chain verifies and restores exactly', async () => {
  const fx = await start();
  const [l1, l2, s1, s2] = ['local-pre', 'local-dump', 'recv-pre', 'recv-dump'].map((n) => path.join(root, 'chain', n));
  let srv = await pageServer(s1);
  ok(runStasis(['pre-dump', '-t', String(fx.pid), '-D', l1, '--page-server', '--address', '127.0.0.1', '--port', String(srv.port)]), 'pre-dump --page-server');
  let end = await srv.done;
  assert.equal(end.code, 0, end.stderr);
  assert.match(end.stderr, /received \d+ pages .* of 1 process\(es\) from 127\.0\.0\.1:\d+/);
  assert.ok(fx.alive, 'the task runs on after the pre-dump');
  assert.deepEqual(files(s1), [`pagemap-${fx.pid}.img`, FIRST_PAGES], 'the page server wrote the pagemap and pages, nothing else');
  assert.ok(!files(l1).some((f) => f.startsWith('pages-')), `no pages written locally: ${files(l1)}`);
  assert.deepEqual(fs.readFileSync(path.join(l1, `pagemap-${fx.pid}.img`)), fs.readFileSync(path.join(s1, `pagemap-${fx.pid}.img`)), 'the sender keeps the same pagemap');
  await step(fx); // every 10th page rewritten, some dropped, some new
  srv = await pageServer(s2, ['--prev-images-dir', '../recv-pre']);
  ok(runStasis(['dump', '-t', String(fx.pid), '-D', l2, '--prev-images-dir', '../local-pre', '--page-server', '--address', '127.0.0.1', '--port', String(srv.port)]), 'dump --page-server');
  end = await srv.done;
  assert.equal(end.code, 0, end.stderr);
  assert.equal((await fx.reap()).kind, 'signaled', 'the dump killed the task once the page server had everything');
  // The sender's directory alone is incomplete: refused before anything is created.
  const alone = runStasis(['restore', '-D', l2, '-d', '--json']);
  assert.equal(alone.status, 1, describeCli(alone));
  assert.match(alone.stderr, new RegExp(`${FIRST_PAGES.replace('.', '\\.')}: missing \\(listed in`));
  assert.ok(!fs.existsSync(`/proc/${fx.pid}`), 'nothing was created');
  const c1 = combine(l1, s1, path.join(root, 'chain', 'pre'));
  const c2 = combine(l2, s2, path.join(root, 'chain', 'dump'));
  fs.rmSync(path.join(c2, 'parent'));
  fs.symlinkSync('../pre', path.join(c2, 'parent'));
  void c1;
  const { inParent } = pageCounts(c2, fx.pid);
  assert.ok(inParent > 2048, `${inParent} pages referred to the pre-dump`);
  ok(runStasis(['check-images', c2]), 'check-images of the combined chain');
  await restoreAndCheck(fx, c2);
});

test('a dump through a page server that resets the connection fails clearly; the target runs on unchanged', async () => {
  const fx = await start();
  // A receiver that answers OPEN2, takes some data, then resets the connection.
  const fake = net.createServer((s) => {
    let got = 0;
    s.on('data', (d) => {
      if (got === 0) s.write(Buffer.from([0]));
      got += d.length;
      if (got > 1 << 20) s.resetAndDestroy();
    });
    s.on('error', () => {});
  });
  await new Promise<void>((r) => fake.listen(0, '127.0.0.1', r));
  const port = (fake.address() as net.AddressInfo).port;
  const dir = path.join(root, 'reset');
  const r = await runStasisAsync(['dump', '-t', String(fx.pid), '-D', dir, '--page-server', '--address', '127.0.0.1', '--port', String(port), '--json']);
  fake.close();
  assert.equal(r.status, 1, describeCli(r));
  const out = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { error: { code: string; message: string } };
  assert.equal(out.error.code, 'STASIS_IO_ERROR');
  assert.match(out.error.message, new RegExp(`page server 127\\.0\\.0\\.1:${port}: sending the pages of ${fx.pid} failed \\((ECONNRESET|EPIPE)\\); nothing was killed`));
  assert.equal(r.stderr.trim().split('\n').length, 1, 'one line');
  assert.ok(fx.alive, 'the target runs on');
  assert.ok(!fs.existsSync(path.join(dir, 'inventory.img')), 'no checkpoint left');
  // Nobody listening: refused before the tree is touched.
  const refused = runStasis(['dump', '-t', String(fx.pid), '-D', dir, '--page-server', '--address', '127.0.0.1', '--port', String(port)]);
  assert.equal(refused.status, 1, describeCli(refused));
  assert.match(refused.stderr, new RegExp(`^stasis: cannot connect to page server 127\\.0\\.0\\.1:${port}: ECONNREFUSED\\n$`));
  await step(fx);
  const { status, log } = await fx.terminate();
  assert.match(log, /^PASS$/m, `the target checked its memory after the failed dumps:\n${log}`);
  assert.equal(status.kind, 'exited');
});

test('a page server whose sender goes away keeps nothing and exits 1; bad commands are refused', async () => {
  const send = async (dir: string, chunks: Buffer[]): Promise<{ code: number | null; stderr: string }> => {
    const srv = await pageServer(dir);
    const s = net.connect(srv.port, '127.0.0.1');
    await new Promise<void>((r) => s.on('connect', r));
    for (const c of chunks) s.write(c);
    s.end();
    s.on('error', () => {});
    return srv.done;
  };
  const iov = (cmd: number, nr: number, vaddr: bigint, dst: bigint) => {
    const b = Buffer.alloc(32);
    b.writeUInt32LE(cmd, 0);
    b.writeBigUInt64LE(BigInt(nr), 8);
    b.writeBigUInt64LE(vaddr, 16);
    b.writeBigUInt64LE(dst, 24);
    return b;
  };
  const dst = (42n << 8n) | 1n;
  const ADD_PRESENT = (4 << 16) | 6;
  // Half the data of a run, then the connection ends.
  const d1 = path.join(root, 'gone');
  let r = await send(d1, [iov(4, 0, 0n, dst), iov(ADD_PRESENT, 2, 0x10000n, dst), Buffer.alloc(4096, 7)]);
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /^stasis: page server: 127\.0\.0\.1:\d+: the sender closed the connection in the middle of page data; nothing kept$/m);
  assert.deepEqual(files(d1), [], 'nothing kept');
  // No CLOSE.
  r = await send(path.join(root, 'noclose'), [iov(4, 0, 0n, dst), iov(ADD_PRESENT, 1, 0x10000n, dst), Buffer.alloc(4096, 7)]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /before it finished \(no CLOSE\)/);
  assert.deepEqual(files(path.join(root, 'noclose')), []);
  // Out of order; pages in a parent that is not there; unknown command.
  r = await send(path.join(root, 'order'), [iov(4, 0, 0n, dst), iov(ADD_PRESENT, 1, 0x20000n, dst), Buffer.alloc(4096), iov(ADD_PRESENT, 1, 0x10000n, dst), Buffer.alloc(4096)]);
  assert.match(r.stderr, /pages at 10000 out of order/);
  r = await send(path.join(root, 'noparent'), [iov(4, 0, 0n, dst), iov((1 << 16) | 6, 1, 0x10000n, dst)]);
  assert.match(r.stderr, /pages in the parent, but there are no parent images here/);
  r = await send(path.join(root, 'unknown'), [iov(99, 0, 0n, dst)]);
  assert.match(r.stderr, /unknown or unsupported command 99/);
  // A whole session: the files, as named and encoded.
  const d2 = path.join(root, 'whole');
  r = await send(d2, [iov(4, 0, 0n, dst), iov(ADD_PRESENT, 2, 0x10000n, dst), Buffer.alloc(8192, 9), iov(0x1023, 0, 0n, 0n)]);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(files(d2), ['pagemap-42.img', FIRST_PAGES]);
  assert.deepEqual(fs.readFileSync(path.join(d2, FIRST_PAGES)), Buffer.alloc(8192, 9));
  const mem = loadDumpedMemory(d2, 42);
  assert.deepEqual(mem.entries.map((e) => [e.vaddr, e.nrPages, e.flags]), [[0x10000n, 2, 4]]);
  // As criu 4.2 sends private anonymous pages: PE_PRESENT|PE_LAZY (6), data following; kept as sent.
  const d3 = path.join(root, 'criu-lazy-flag');
  r = await send(d3, [iov(4, 0, 0n, dst), iov(ADD_PRESENT, 1, 0x10000n, dst), Buffer.alloc(4096, 1), iov((6 << 16) | 6, 2, 0x20000n, dst), Buffer.alloc(8192, 2), iov(0x1023, 0, 0n, 0n)]);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(fs.readFileSync(path.join(d3, FIRST_PAGES)), Buffer.concat([Buffer.alloc(4096, 1), Buffer.alloc(8192, 2)]));
  assert.deepEqual(loadDumpedMemory(d3, 42).entries.map((e) => [e.vaddr, e.nrPages, e.flags]), [[0x10000n, 1, 4], [0x20000n, 2, 6]]);
  // PE_LAZY alone (pages left on a lazy source) has nothing to receive: refused.
  r = await send(path.join(root, 'lazy-only'), [iov(4, 0, 0n, dst), iov((2 << 16) | 6, 1, 0x10000n, dst)]);
  assert.match(r.stderr, /pagemap entry flags 2 not supported/);
});

test('page-server -d: in the background once listening (pid printed and in --pidfile); a dump -R into it; it exits when the session ends', async () => {
  const fx = await start();
  const recv = path.join(root, 'daemon-recv'), pidfile = path.join(root, 'daemon.pid');
  const r = await runStasisAsync(['page-server', '-D', recv, '--address', '127.0.0.1', '--port', '0', '-d', '--pidfile', pidfile]);
  assert.equal(r.status, 0, describeCli(r));
  const m = /^stasis page-server: listening on 127\.0\.0\.1:(\d+) pid (\d+)$/.exec(r.stdout.trim());
  assert.ok(m, r.stdout);
  const pid = Number(m[2]);
  assert.equal(fs.readFileSync(pidfile, 'utf8'), `${pid}\n`);
  assert.ok(fs.existsSync(`/proc/${pid}`), 'the daemon runs');
  assert.deepEqual(files(recv), [], 'nothing in its directory while it waits');
  ok(runStasis(['dump', '-t', String(fx.pid), '-D', path.join(root, 'daemon-local'), '-R', '--page-server', '--address', '127.0.0.1', '--port', m[1]]), 'dump -R --page-server');
  const st = await reap(pid, 30000);
  assert.equal(st.kind, 'exited');
  assert.equal(st.code, 0);
  assert.deepEqual(files(recv), [`pagemap-${fx.pid}.img`, FIRST_PAGES]);
  assert.ok(fx.alive, '-R: the tree goes on');
  await step(fx);
  const { log } = await fx.terminate();
  assert.match(log, /^PASS$/m, log);
});
