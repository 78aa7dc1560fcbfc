// stasis migrate --lazy (post-copy): the final dump leaves the private
// anonymous pages out and serves them from the frozen tree; the receiver
// restores at once and the tree runs there while its pages are still coming
// (on fault, then streamed); the source kills its tree once every page is
// there, and prints the downtime.
//
// Hosts as in migrate.test.ts: network namespaces A (the source's stasis) and
// B (the receiver's) joined by a veth pair; the tree lives in a namespace S of
// its own (dumped as external, joined by the restore). The fixture
// (postcopy.c) makes its tree in a pid namespace of its own, so that the copy
// can run on this one kernel while the source is still frozen.
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { Fixture, initHarness, tmpDir, buildFixture, waitFor, STASIS, type CliResult } from './harness';
import { ImageReader } from '../src/images/image';
import { PE } from '../src/images/criu';
import { tryKill, abi } from '../src/sys';
import { makeHosts, dropHosts } from './net-helpers';

const TAG = `stasis-mlz-${process.pid}`;
const NS = { s: `${TAG}-s`, a: `${TAG}-a`, b: `${TAG}-b` };
const VETH = [`mlA${process.pid % 100000}`, `mlB${process.pid % 100000}`];
const ADDR = { a: '10.231.9.1', b: '10.231.9.2' };
const MIB = 64;

let root: string;
const started: Fixture[] = [];
const children: ChildProcess[] = [];
const others: number[] = [];

before(() => {
  initHarness();
  root = tmpDir('migrate-lazy');
  makeHosts(NS, VETH, ADDR);
});

after(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  for (const pid of others) tryKill(pid, abi.SIG.SIGKILL);
  for (const fx of started) await fx.kill();
  dropHosts(NS);
  fs.rmSync(root, { recursive: true, force: true });
});

const inNs = (ns: string, argv: string[]) => ['nsenter', `--net=/run/netns/${ns}`, ...argv];

function run(argv: string[], env: Record<string, string> = {}): { child: ChildProcess; done: Promise<CliResult>; out: () => string; err: () => string } {
  const child = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  children.push(child);
  let stdout = '', stderr = '';
  child.stdout!.on('data', (d: Buffer) => { stdout += d.toString(); });
  child.stderr!.on('data', (d: Buffer) => { stderr += d.toString(); });
  const done = new Promise<CliResult>((resolve) => child.on('close', (status, signal) => resolve({ status, signal, stdout, stderr })));
  return { child, done, out: () => stdout, err: () => stderr };
}

function state(pid: number): string {
  const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  return s.slice(s.lastIndexOf(')') + 2, s.lastIndexOf(')') + 3);
}

/** SIGUSR1 to `pid` (the copy, writing the fixture's log): the status of the next ANSWER line. */
async function answer(fx: Fixture, pid: number): Promise<string> {
  const lines = () => [...fx.log().matchAll(/^ANSWER \d+ (ok|bad)$/gm)];
  const n = lines().length;
  tryKill(pid, abi.SIG.SIGUSR1);
  await waitFor('an answer', () => lines().length > n, 60000);
  return lines()[n][1];
}

test('migrate --lazy between network namespaces: the tree runs there while its pages still come from the frozen source, which is killed once they are all there; every byte is right', async () => {
  const fx = await Fixture.startCommand('postcopy', (d) => inNs(NS.s, [buildFixture('postcopy'), d, String(MIB)]));
  started.push(fx);
  const init = Number(/^CHILD (\d+)$/m.exec(fx.log())![1]);
  await fx.waitLog(/^INIT_READY$/m, 60000);
  const dir = path.join(root, 'lazy');
  // Streaming held there until `hold` exists: the copy runs on the pages its faults pulled.
  const hold = path.join(root, 'hold');
  const recv = run(inNs(NS.b, [process.execPath, STASIS, 'migrate-receive', '-D', dir, '--address', ADDR.b, '--port', '0', '--join-ns', `net:/run/netns/${NS.s}`]), { STASIS_LAZY_HOLD: hold });
  let port = 0;
  await waitFor('the receiver to listen', () => {
    const m = /^stasis migrate-receive: listening on [\d.]+:(\d+)$/m.exec(recv.out());
    if (m) port = Number(m[1]);
    return port > 0 || recv.child.exitCode !== null;
  }, 30000);
  assert.ok(port > 0, `receiver did not listen: ${recv.err()}`);
  const ino = fs.statSync(`/run/netns/${NS.s}`).ino;
  const src = run(inNs(NS.a, [process.execPath, STASIS, 'migrate', '-t', String(init), '--to', `${ADDR.b}:${port}`, '--lazy', '--external', `net[${ino}]:svc`]));
  await waitFor('the restore there', () => /^migrate-receive: restored pid \d+; pulling [\d.]+ MiB of lazy pages from [\d.]+:\d+$/m.test(recv.err()) || recv.child.exitCode !== null, 120000);
  const copy = Number(/^migrate-receive: restored pid (\d+);/m.exec(recv.err())?.[1]);
  assert.ok(copy > 0, `no restore line: ${recv.err()}\nsource: ${src.err()}`);
  others.push(copy);
  assert.notEqual(copy, init);
  // The copy answers (first, middle and last page of its region) while the source is frozen and serving.
  assert.equal(await answer(fx, copy), 'ok');
  assert.equal(state(init), 't', 'the source stays frozen (traced) while it serves');
  assert.equal(src.child.exitCode, null, 'migrate waits until every page is there');
  assert.equal(fs.readlinkSync(`/proc/${copy}/ns/net`), `net:[${ino}]`, 'the copy runs in the service namespace');
  // The final images left the region out: PE_LAZY entries, no pre-dump rounds.
  assert.deepEqual(fs.readdirSync(dir).sort(), ['final']);
  const es = new ImageReader(path.join(dir, 'final')).withHead('pagemap-1.img', 'PAGEMAP', 'pagemap_head', 'pagemap_entry').entries;
  const lazyPages = es.filter((e) => (e.flags ?? PE.PRESENT) === PE.LAZY).reduce((n, e) => n + e.nr_pages, 0);
  assert.ok(lazyPages >= MIB * 256, `${lazyPages} lazy pages, at least the ${MIB * 256} of the region`);
  fs.writeFileSync(hold, '');
  const [s, d] = await Promise.all([src.done, recv.done]);
  assert.equal(s.status, 0, `migrate: ${s.stderr}`);
  assert.equal(d.status, 0, `migrate-receive: ${d.stderr}`);
  assert.match(s.stderr, new RegExp(`^migrated pid ${init} to ${ADDR.b.replace(/\./g, '\\.')}:${port} \\(restored pid ${copy}\\) post-copy: final dump \\d+ pages, (\\d+) pulled after the restore in \\d+ requests; downtime \\d+\\.\\d ms \\(frozen here → running there\\)$`, 'm'));
  const pulled = Number(/, (\d+) pulled after the restore/.exec(s.stderr)![1]);
  assert.ok(pulled >= MIB * 256, `${pulled} pages pulled, at least the region's ${MIB * 256}`);
  assert.match(d.stderr, /^migrate-receive: restored pid \d+ from [\d.]+:\d+ in \d+\.\d ms; every lazy page in \(\d+ pulled\)$/m);
  console.log(`# ${s.stderr.trim().split('\n').at(-1)}`);
  // The source: killed once the copy had every page (the fixture reaped it: status 9).
  await fx.waitLog(/^CHILD_EXIT 9$/m, 30000);
  tryKill(copy, abi.SIG.SIGTERM);
  await fx.waitLog(/^PASS$|^FAIL/m, 60000);
  assert.match(fx.log(), /^PASS$/m, 'the copy checked every byte of its region');
  assert.doesNotMatch(fx.log(), /FAIL|ANSWER \d+ bad/);
});
