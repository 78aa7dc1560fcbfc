// Post-copy (criu's shapes): `dump --lazy-pages --port N` writes every image
// but the private anonymous pages and serves those from the frozen tree;
// `restore --lazy-pages --page-server --address A --port N` runs the tree at
// once and fetches them on fault and in the background. Same machine,
// localhost: the fixture (postcopy.c) lives in a pid namespace of its own, so
// its copy can run while the source is still frozen. It checks every byte of
// its region itself. Failures: the source gone mid-transfer kills the copy
// (it never reads a page that did not come); the restorer gone lets the
// source run on with all its memory.
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { Fixture, initHarness, runStasis, describeCli, tmpDir, restoreDetached, reap, waitFor, waitGone, crit, STASIS } from './harness';
import { tryKill, abi } from '../src/sys';
import { ImageReader, encodeImage, parts } from '../src/images/image';
import { PE } from '../src/images/criu';

let root: string;
const started: Fixture[] = [];
const others: number[] = [];

before(() => {
  initHarness();
  root = tmpDir('postcopy');
});

after(async () => {
  for (const pid of others) tryKill(pid, abi.SIG.SIGKILL);
  for (const fx of started) await fx.kill();
  fs.rmSync(root, { recursive: true, force: true });
});

const MIB = 96;

interface Source { fx: Fixture; init: number; dir: string; dump: ChildProcess; port: number; stderr: () => string; exited: Promise<number | null> }

/** Start the fixture and `dump --lazy-pages` of its init; resolved once the dump serves (images complete). */
async function lazyDump(name: string): Promise<Source> {
  const fx = await Fixture.start('postcopy', { args: [String(MIB)] });
  started.push(fx);
  const init = Number(/^CHILD (\d+)$/m.exec(fx.log())![1]);
  await fx.waitLog(/^INIT_READY$/m, 60000);
  const dir = path.join(root, name);
  const dump = spawn(process.execPath, [STASIS, 'dump', '-t', String(init), '-D', dir, '--lazy-pages', '--address', '127.0.0.1', '--port', '0'], { stdio: ['ignore', 'ignore', 'pipe'] });
  others.push(dump.pid!);
  let err = '';
  dump.stderr!.on('data', (d: Buffer) => { err += d.toString(); });
  const exited = new Promise<number | null>((resolve) => dump.on('exit', (code) => resolve(code)));
  await waitFor('the dump to serve', () => /lazy pages served on/.test(err) || dump.exitCode !== null, 60000);
  const m = /^stasis dump: lazy pages served on 127\.0\.0\.1:(\d+)$/m.exec(err);
  assert.ok(m, `no serving line: ${err}`);
  return { fx, init, dir, dump, port: Number(m[1]), stderr: () => err, exited };
}

function state(pid: number): string {
  const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  return s.slice(s.lastIndexOf(')') + 2, s.lastIndexOf(')') + 3);
}

function lazyEntries(dir: string, pid: number): { pages: number; lazy: number } {
  const es = new ImageReader(dir).withHead(`pagemap-${pid}.img`, 'PAGEMAP', 'pagemap_head', 'pagemap_entry').entries;
  let pages = 0, lazy = 0;
  for (const e of es) {
    if ((e.flags ?? PE.PRESENT) === PE.LAZY) lazy += e.nr_pages;
    else pages += e.nr_pages;
  }
  return { pages, lazy };
}

/** SIGUSR1 to `pid` (the source or its copy, both writing the log): the status of the next ANSWER line. */
async function answer(fx: Fixture, pid: number): Promise<string> {
  const lines = () => [...fx.log().matchAll(/^ANSWER \d+ (ok|bad)$/gm)];
  const before = lines().length;
  tryKill(pid, abi.SIG.SIGUSR1);
  await waitFor('an answer', () => lines().length > before, 60000);
  return lines()[before][1];
}

test('dump --lazy-pages → restore --lazy-pages --page-server: the copy answers while its pages are still coming, the source is killed once it has them all, every byte is right', async () => {
  const src = await lazyDump('ok');
  // The private region is not in the images: PE_LAZY entries, their pages on the server.
  const { lazy } = lazyEntries(src.dir, 1);
  assert.ok(lazy >= MIB * 256, `${lazy} lazy pages, at least the ${MIB * 256} of the region`);
  assert.ok(fs.statSync(path.join(src.dir, fs.readdirSync(src.dir).find((f) => /^pages-\d+\.img$/.test(f))!)).size < (MIB << 20) / 4, 'the region is not in the pages file');
  assert.equal(state(src.init), 't', 'the source stays frozen (traced) while it serves');
  const hold = path.join(root, 'hold-ok');
  const { pid: copy, r } = restoreDetached(src.dir, ['--lazy-pages', '--page-server', '--address', '127.0.0.1', '--port', String(src.port)], { STASIS_LAZY_HOLD: hold });
  others.push(copy);
  const server = Number(/^lazy pages: [\d.]+ MiB to serve, by pid (\d+)$/m.exec(r.stderr)![1]);
  // Streaming held: the copy answers from pages fetched on its faults; the source is still there, frozen.
  assert.equal(await answer(src.fx, copy), 'ok');
  assert.equal(state(src.init), 't');
  assert.equal(src.dump.exitCode, null, 'the dump still serves');
  fs.writeFileSync(hold, '');
  const st = await reap(server, 120000);
  assert.deepEqual([st.kind, st.kind === 'exited' ? st.code : -1], ['exited', 0], 'the restorer\'s server exits 0 once every page is in');
  assert.equal(await src.exited, 0, `the dump ends once the restorer has every page: ${src.stderr()}`);
  assert.match(src.stderr(), /killed$/m);
  await waitGone([src.init], 10000);
  await src.fx.waitLog(/^CHILD_EXIT 9$/m, 10000); // the source init, SIGKILLed (status 9), reaped by the fixture
  tryKill(copy, abi.SIG.SIGTERM);
  const cs = await reap(copy, 60000);
  assert.deepEqual([cs.kind, cs.kind === 'exited' ? cs.code : -1], ['exited', 0], src.fx.log());
  assert.match(src.fx.log(), /^PASS$/m, 'the copy checked every byte of its region');
  assert.doesNotMatch(src.fx.log(), /FAIL/);
});

test('the source killed mid-transfer: the copy is killed (it never reads a page that did not come); the source tree runs on whole', async () => {
  const src = await lazyDump('source-killed');
  const hold = path.join(root, 'hold-source-killed');
  const { pid: copy, r } = restoreDetached(src.dir, ['--lazy-pages', '--page-server', '--address', '127.0.0.1', '--port', String(src.port)], { STASIS_LAZY_HOLD: hold });
  others.push(copy);
  const server = Number(/^lazy pages: [\d.]+ MiB to serve, by pid (\d+)$/m.exec(r.stderr)![1]);
  assert.equal(await answer(src.fx, copy), 'ok');
  tryKill(src.dump.pid!, abi.SIG.SIGKILL);
  await src.exited;
  fs.writeFileSync(hold, ''); // streaming resumes: the next page it asks for cannot come
  const st = await reap(server, 60000);
  assert.deepEqual([st.kind, st.kind === 'exited' ? st.code : -1], ['exited', 1], 'the restorer\'s server fails');
  const cs = await reap(copy, 10000);
  assert.deepEqual([cs.kind, cs.kind === 'signaled' ? cs.signal : -1], ['signaled', abi.SIG.SIGKILL], 'the copy is killed');
  // The dumper's death let the source go (no EXITKILL on a dump): it runs, with all its memory.
  await waitFor('the source to run again', () => state(src.init) !== 't', 10000);
  assert.equal(await answer(src.fx, src.init), 'ok');
  tryKill(src.init, abi.SIG.SIGTERM);
  await src.fx.waitLog(/^CHILD_EXIT 0$/m, 60000);
  assert.equal((src.fx.log().match(/^PASS$/gm) ?? []).length, 1, 'only the source passed (the copy never reached its check)');
});

test('the restorer gone mid-transfer: the dump fails, the source tree is let go and runs on whole', async () => {
  const src = await lazyDump('restorer-killed');
  const hold = path.join(root, 'hold-restorer-killed');
  const { pid: copy, r } = restoreDetached(src.dir, ['--lazy-pages', '--page-server', '--address', '127.0.0.1', '--port', String(src.port)], { STASIS_LAZY_HOLD: hold });
  others.push(copy);
  const server = Number(/^lazy pages: [\d.]+ MiB to serve, by pid (\d+)$/m.exec(r.stderr)![1]);
  assert.equal(await answer(src.fx, copy), 'ok');
  tryKill(server, abi.SIG.SIGKILL);
  await reap(server, 10000); // then its children are ours (the subreaper's)
  const cs = await reap(copy, 10000);
  assert.deepEqual([cs.kind, cs.kind === 'signaled' ? cs.signal : -1], ['signaled', abi.SIG.SIGKILL], 'the copy dies with its server');
  assert.equal(await src.exited, 1);
  assert.match(src.stderr(), /closed the connection before it had every page.*the tree runs on here/);
  assert.equal(await answer(src.fx, src.init), 'ok', 'the source answers again');
  tryKill(src.init, abi.SIG.SIGTERM);
  await src.fx.waitLog(/^CHILD_EXIT 0$/m, 60000);
  assert.match(src.fx.log(), /^PASS$/m);
});

test('a lazy dump\'s images are refused without the page server, with nobody listening, and --page-server without --lazy-pages', async () => {
  const src = await lazyDump('refusals');
  const plain = runStasis(['restore', '-D', src.dir, '-d']);
  assert.equal(plain.status, 1, describeCli(plain));
  assert.match(plain.stderr, /pagemap-1\.img: entry at [0-9a-f]+: its pages are on the dump's lazy pages server \(dump --lazy-pages\): restore with --lazy-pages --page-server/);
  const local = runStasis(['restore', '-D', src.dir, '-d', '--lazy-pages']);
  assert.equal(local.status, 1, describeCli(local));
  assert.match(local.stderr, /its pages are on the dump's lazy pages server/);
  // A port where nobody listens (ours, just closed by a dump that served nothing yet is not it: pick the next one).
  const none = runStasis(['restore', '-D', src.dir, '-d', '--lazy-pages', '--page-server', '--address', '127.0.0.1', '--port', String(src.port === 65535 ? 1 : src.port + 1)]);
  assert.equal(none.status, 1, describeCli(none));
  assert.match(none.stderr, /cannot connect to the lazy pages server 127\.0\.0\.1:\d+: ECONNREFUSED; nothing was restored/);
  const noLazy = runStasis(['restore', '-D', src.dir, '-d', '--page-server', '--address', '127.0.0.1', '--port', String(src.port)]);
  assert.equal(noLazy.status, 2, describeCli(noLazy));
  assert.match(noLazy.stderr, /restore --page-server needs --lazy-pages/);
  assert.equal(state(src.init), 't', 'the source is still frozen, waiting for its restorer');
  // No restorer will come: the source is let go by killing its dumper (as an operator would).
  tryKill(src.dump.pid!, abi.SIG.SIGKILL);
  await src.exited;
  await waitFor('the source to run again', () => state(src.init) !== 't', 10000);
  tryKill(src.init, abi.SIG.SIGTERM);
  await src.fx.waitLog(/^CHILD_EXIT 0$/m, 60000);
  assert.match(src.fx.log(), /^PASS$/m);
});

test('dump --lazy-pages refuses -R and --page-server before touching the tree', async () => {
  const fx = await Fixture.start('postcopy', { args: ['4'] });
  started.push(fx);
  const init = Number(/^CHILD (\d+)$/m.exec(fx.log())![1]);
  await fx.waitLog(/^INIT_READY$/m, 60000);
  const r = runStasis(['dump', '-t', String(init), '-D', path.join(root, 'refuse-R'), '--lazy-pages', '--port', '0', '-R']);
  assert.equal(r.status, 2, describeCli(r));
  assert.match(r.stderr, /--lazy-pages does not go with -R/);
  const ps = runStasis(['dump', '-t', String(init), '-D', path.join(root, 'refuse-ps'), '--lazy-pages', '--page-server', '--address', '127.0.0.1', '--port', '1']);
  assert.equal(ps.status, 2, describeCli(ps));
  assert.match(ps.stderr, /--lazy-pages serves the pages itself/);
  assert.equal(await answer(fx, init), 'ok', 'untouched, running');
  tryKill(init, abi.SIG.SIGTERM);
  await fx.waitLog(/^CHILD_EXIT 0$/m, 60000);
  assert.match(fx.log(), /^PASS$/m);
});

test('crit (Debian\'s criu) decodes a lazy dump\'s pagemap: its PE_LAZY entries as criu writes them', async () => {
  const src = await lazyDump('crit');
  const j = JSON.parse(crit(['decode', '-i', path.join(src.dir, 'pagemap-1.img')])) as { entries: { flags?: number; nr_pages: number }[] };
  const ours = lazyEntries(src.dir, 1);
  const lazy = j.entries.slice(1).filter((e) => e.flags === PE.LAZY);
  assert.equal(lazy.reduce((n, e) => n + e.nr_pages, 0), ours.lazy, 'the lazy pages, as stasis reads them');
  assert.ok(ours.lazy >= MIB * 256);
  assert.equal(j.entries.slice(1).filter((e) => e.flags === PE.PRESENT).reduce((n, e) => n + e.nr_pages, 0), ours.pages);
  assert.equal(j.entries.slice(1).filter((e) => e.flags !== PE.LAZY && e.flags !== PE.PRESENT).length, 0);
  tryKill(src.dump.pid!, abi.SIG.SIGKILL);
  await src.exited;
  await waitFor('the source to run again', () => state(src.init) !== 't', 10000);
  tryKill(src.init, abi.SIG.SIGTERM);
  await src.fx.waitLog(/^PASS$/m, 60000);
});

test('a pagemap as CRIU 4.2 writes it (count in field 5, uint64; field 2 zero) restores exactly', async () => {
  const fx = await Fixture.start('postcopy', { args: ['8'] });
  started.push(fx);
  const init = Number(/^CHILD (\d+)$/m.exec(fx.log())![1]);
  await fx.waitLog(/^INIT_READY$/m, 60000);
  const dir = path.join(root, 'field5');
  const d = runStasis(['dump', '-t', String(init), '-D', dir]);
  assert.equal(d.status, 0, describeCli(d));
  await fx.waitLog(/^CHILD_EXIT 9$/m, 10000);
  const pm = new ImageReader(dir).withHead('pagemap-1.img', 'PAGEMAP', 'pagemap_head', 'pagemap_entry');
  assert.ok(pm.entries.length > 0);
  const criu42 = pm.entries.map((e) => ({ vaddr: e.vaddr, nr_pages: 0, nr_pages64: BigInt(e.nr_pages), flags: e.flags }));
  fs.writeFileSync(path.join(dir, 'pagemap-1.img'), encodeImage('PAGEMAP', [...parts('pagemap_head', [pm.head]), ...parts('pagemap_entry', criu42)]));
  // What stasis reads back is field 5: the same runs.
  const back = new ImageReader(dir).withHead('pagemap-1.img', 'PAGEMAP', 'pagemap_head', 'pagemap_entry').entries;
  assert.deepEqual(back.map((e) => [e.nr_pages, e.nr_pages64]), pm.entries.map((e) => [0, BigInt(e.nr_pages)]));
  // The digest names the old bytes: restored without it, as images made by criu are (the log grew since: the parent wrote CHILD_EXIT).
  const { pid: copy } = restoreDetached(dir, ['--no-verify', '--skip-file-check']);
  others.push(copy);
  assert.equal(await answer(fx, copy), 'ok');
  tryKill(copy, abi.SIG.SIGTERM);
  const cs = await reap(copy, 60000);
  assert.deepEqual([cs.kind, cs.kind === 'exited' ? cs.code : -1], ['exited', 0], fx.log());
  assert.match(fx.log(), /^PASS$/m);
});
