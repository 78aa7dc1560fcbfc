// A checkpoint that cannot be restored is refused with one clear line naming
// the file, exit 1, before any process exists; a restore that fails (or whose
// restorer is SIGKILLed) at any phase leaves nothing behind — no task under
// the dumped pid, no stub — and the same images then restore normally.
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  Fixture, initHarness, runStasis, describeCli, tmpDir, restoreDetached, reapZombies, descendantsOf, cmdline,
  waitGone, waitFor, loadDumpedMemory, PAGE, type CliResult, rewriteImage,
} from './harness';
import { readImage, ImageReader, parts } from '../src/images/image';
import { tryKill, abi } from '../src/sys';
import { VMA } from '../src/images/criu';
import { restoreSteps } from '../src/restore/restore';

let fx: Fixture;
let root: string;
/** A good checkpoint of the memory fixture (killed by its dump). */
let base: string;
let baseLog: string;
let n = 0;

before(async () => {
  initHarness();
  root = tmpDir('rerrors');
  base = path.join(root, 'base');
  fx = await Fixture.start('memory');
  const r = runStasis(['dump', '-t', String(fx.pid), '-D', base]);
  assert.equal(r.status, 0, describeCli(r));
  await fx.reap();
  baseLog = fx.log();
});

after(async () => {
  await fx?.kill();
  fs.rmSync(root, { recursive: true, force: true });
});

/** A copy of the good checkpoint to spoil. */
function copyBase(): string {
  const d = path.join(root, `case${n++}`);
  fs.cpSync(base, d, { recursive: true });
  return d;
}

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/**
 * Nothing of a restore is left: after reaping what was re-parented to us,
 * no process has the dumped pid, and we have no descendant at all (no stub,
 * no half-made task) besides `allowed`.
 */
async function assertNothingLeft(what: string, allowed: number[] = []): Promise<void> {
  if (!allowed.includes(fx.pid)) await waitGone([fx.pid], 5000);
  // A stub or half-made task killed with its restorer (PDEATHSIG, PTRACE_O_EXITKILL) may still be
  // dying on a busy machine: gone within the bound, or reported below.
  const others = () => { reapZombies(); return descendantsOf().filter((p) => !allowed.includes(p)); };
  await waitFor(`${what}: the restore's processes gone`, () => others().length === 0, 5000).catch(() => undefined);
  const left = others();
  assert.deepEqual(left.map((p) => `${p}: ${cmdline(p)}`), [], `${what}: processes left behind`);
}

/** Exit 1, nothing on stdout, one line `stasis: FILE: ...` matching `re`, nothing left running. */
async function assertRefused(r: CliResult, file: string, re: RegExp, what: string): Promise<void> {
  assert.equal(r.status, 1, `${what}: ${describeCli(r)}`);
  assert.equal(r.stdout, '');
  const lines = r.stderr.trimEnd().split('\n');
  assert.equal(lines.length, 1, `${what}: one line on stderr: ${r.stderr}`);
  assert.doesNotMatch(r.stderr, /internal error|^\s+at /m, 'no stack trace');
  assert.match(lines[0], new RegExp(`^stasis: .*${escapeRe(file)}`), `${what}: names ${file}`);
  assert.match(lines[0], re, what);
  await assertNothingLeft(what);
}

/** Files of `d` that differ from the good checkpoint's (changed, added or removed). */
function changedFiles(d: string): string[] {
  const names = new Set([...fs.readdirSync(base), ...fs.readdirSync(d)]);
  return [...names].filter((f) => {
    const a = path.join(base, f), b = path.join(d, f);
    return !fs.existsSync(a) || !fs.existsSync(b) || !fs.readFileSync(a).equals(fs.readFileSync(b));
  });
}

/**
 * Damaged images: refused by the digest check first (one line naming a file
 * that changed and the digest); with --no-verify, by the reader's own checks
 * (one line naming `file` and matching `re`). Nothing is created either way.
 */
async function assertDamaged(d: string, file: string, re: RegExp, what: string): Promise<void> {
  const changed = changedFiles(d);
  assert.ok(changed.length > 0, `${what}: the images were changed`);
  const r = runStasis(['restore', '-D', d, '-d']);
  assert.equal(r.status, 1, `${what}: ${describeCli(r)}`);
  const lines = r.stderr.trimEnd().split('\n');
  assert.equal(lines.length, 1, `${what}: one line on stderr: ${r.stderr}`);
  assert.match(lines[0], new RegExp(`^stasis: (${changed.map((f) => escapeRe(path.join(d, f))).join('|')}): .*${escapeRe(path.join(d, 'stasis-digest'))}`), `${what}: the digest check names a changed file`);
  await assertNothingLeft(`${what} (verified)`);
  await assertRefused(runStasis(['restore', '-D', d, '-d', '--no-verify']), file, re, what);
}

/** Restore the good images, check the task, kill and reap it. */
async function assertRestores(what: string, dir = base, args: string[] = []): Promise<void> {
  fs.writeFileSync(fx.logPath, baseLog);
  const { pid } = restoreDetached(dir, args);
  fx.restored();
  assert.equal(pid, fx.pid, what);
  await fx.assertCounting();
  tryKill(fx.pid, abi.SIG.SIGKILL);
  await fx.reap();
  await assertNothingLeft(`${what}: after the kill`);
}

test('the good checkpoint restores', async () => {
  await assertRestores('good images');
});

// ---------------------------------------------------------------- malformed images

test('bad magic', async () => {
  const d = copyBase();
  const f = path.join(d, `core-${fx.pid}.img`);
  const b = fs.readFileSync(f);
  b[0] ^= 0xff;
  fs.writeFileSync(f, b);
  await assertDamaged(d, f, /bad magic/, 'bad magic');
});

test('bad magic of the inventory', async () => {
  const d = copyBase();
  const f = path.join(d, 'inventory.img');
  const b = fs.readFileSync(f);
  b.writeUInt32LE(0x54564319, 0); // the common magic where the inventory's own belongs
  fs.writeFileSync(f, b);
  await assertDamaged(d, f, /bad magic/, 'inventory bad magic');
});

test('truncated entry', async () => {
  const d = copyBase();
  const f = path.join(d, `mm-${fx.pid}.img`);
  const b = fs.readFileSync(f);
  fs.writeFileSync(f, b.subarray(0, b.length - 7));
  await assertDamaged(d, f, /truncated/, 'truncated entry');
});

test('truncated entry header', async () => {
  const d = copyBase();
  const f = path.join(d, 'pstree.img');
  fs.writeFileSync(f, Buffer.concat([fs.readFileSync(f), Buffer.from([1, 0])]));
  await assertDamaged(d, f, /truncated/, 'truncated entry header');
});

test('an entry that is not protobuf', async () => {
  const d = copyBase();
  const f = path.join(d, `fs-${fx.pid}.img`);
  const b = fs.readFileSync(f);
  b.fill(0xff, 12); // the body of the first entry: garbage
  fs.writeFileSync(f, b);
  await assertDamaged(d, f, /does not decode|truncated/, 'garbage entry');
});

test('pagemap entries beyond pages-N.img', async () => {
  const d = copyBase();
  const mem = loadDumpedMemory(d, fx.pid);
  const pages = path.join(d, `pages-${mem.pagesId}.img`);
  fs.truncateSync(pages, mem.pages.length - 2 * PAGE);
  await assertDamaged(d, path.join(d, `pagemap-${fx.pid}.img`),
    new RegExp(`pages-${mem.pagesId}\\.img holds only`), 'pages file too short');
});

test('pagemap entry outside every VMA', async () => {
  const d = copyBase();
  const file = `pagemap-${fx.pid}.img`;
  const pm = new ImageReader(d, null).withHead(file, 'PAGEMAP', 'pagemap_head', 'pagemap_entry');
  // One more page at the very end of the address space nobody maps.
  pm.entries.push({ vaddr: 0x7ffffff00000n, nr_pages: 1, flags: 4 });
  rewriteImage(d, file, 'PAGEMAP', [{ msg: 'pagemap_head', entry: pm.head }, ...parts('pagemap_entry', pm.entries)]);
  const mem = loadDumpedMemory(base, fx.pid);
  fs.appendFileSync(path.join(d, `pages-${mem.pagesId}.img`), Buffer.alloc(PAGE, 7));
  await assertDamaged(d, path.join(d, file), /outside every VMA/, 'pagemap outside VMAs');
});

/** Decode mm-PID.img, change its VMAs, encode it back. */
function editVmas(d: string, edit: (vmas: { start: bigint; end: bigint; status: number }[]) => void): string {
  const file = `mm-${fx.pid}.img`;
  const [mm] = readImage(d, file, 'MM', 'mm_entry');
  // Re-encoding the untouched entry gives the same bytes: only our edit differs.
  const orig = fs.readFileSync(path.join(d, file));
  rewriteImage(d, file, 'MM', parts('mm_entry', [mm]));
  assert.ok(fs.readFileSync(path.join(d, file)).equals(orig), 'mm image round-trips byte for byte');
  edit(mm.vmas!);
  rewriteImage(d, file, 'MM', parts('mm_entry', [mm]));
  return path.join(d, file);
}

/** Index of an anonymous private VMA (status VMA_AREA_REGULAR|VMA_ANON_PRIVATE) after another VMA. */
function anonVma(vmas: { status: number }[]): number {
  const i = vmas.findIndex((v, k) => k > 0 && v.status === (VMA.AREA_REGULAR | VMA.ANON_PRIVATE));
  assert.ok(i > 0, 'an anonymous private VMA');
  return i;
}

test('overlapping VMAs', async () => {
  const d = copyBase();
  const f = editVmas(d, (vmas) => {
    const i = anonVma(vmas);
    vmas[i].start = vmas[i - 1].end - BigInt(PAGE);
  });
  await assertDamaged(d, f, /overlaps/, 'overlapping VMAs');
});

test('unaligned VMA', async () => {
  const d = copyBase();
  const f = editVmas(d, (vmas) => {
    const i = anonVma(vmas);
    vmas[i].end += 0x80n;
  });
  await assertDamaged(d, f, /not page-aligned/, 'unaligned VMA');
});

test('unknown file type in files.img', async () => {
  const d = copyBase();
  const f = path.join(d, 'files.img');
  const b = fs.readFileSync(f);
  // First entry: u32 length at 8, then field 1 (type, varint): 08 xx.
  assert.equal(b[12], 0x08, 'files.img entry starts with its type field');
  b[13] = 99;
  fs.writeFileSync(f, b);
  await assertDamaged(d, f, /unsupported file type 99/, 'unknown file type');
});

test('an fd whose type in fdinfo is not its file\'s', async () => {
  const d = copyBase();
  const [ids] = readImage(d, `ids-${fx.pid}.img`, 'IDS', 'task_kobj_ids_entry');
  const file = `fdinfo-${ids.files_id}.img`;
  const fds = readImage(d, file, 'FDINFO', 'fdinfo_entry');
  assert.ok(fds.length >= 3);
  fds[1].type = 6; // EVENTFD
  rewriteImage(d, file, 'FDINFO', parts('fdinfo_entry', fds));
  await assertDamaged(d, path.join(d, file), /fd 1: type EVENTFD/, 'fdinfo type');
});

test('missing inventory.img', async () => {
  const d = copyBase();
  fs.rmSync(path.join(d, 'inventory.img'));
  await assertDamaged(d, path.join(d, 'inventory.img'), /missing/, 'no inventory');
});

test('missing core image', async () => {
  const d = copyBase();
  const f = path.join(d, `core-${fx.pid}.img`);
  fs.rmSync(f);
  await assertDamaged(d, f, /missing/, 'no core image');
});

test('a mapped file that changed size is refused; --skip-file-check restores anyway', async () => {
  const priv = path.join(fx.dir, 'privfile');
  const size = fs.statSync(priv).size;
  // One more page past the mapped range: the mapping itself is unaffected,
  // so restoring over the check is safe for this fixture.
  fs.appendFileSync(priv, Buffer.alloc(PAGE, 1));
  try {
    const r = runStasis(['restore', '-D', base, '-d']);
    await assertRefused(r, priv, new RegExp(`changed size since the dump \\(${size} → ${size + PAGE} bytes\\)`), 'changed size');
    assert.match(r.stderr, new RegExp(`^stasis: ${escapeRe(path.join(base, `mm-${fx.pid}.img`))}: VMA `), 'names the image and the VMA');

    fs.writeFileSync(fx.logPath, baseLog);
    const { pid } = restoreDetached(base, ['--skip-file-check']);
    fx.restored();
    assert.equal(pid, fx.pid);
    const { status, log } = await fx.terminate();
    assert.match(log.slice(baseLog.length), /^PASS$/m, log);
    assert.equal(status.kind, 'exited');
  } finally {
    fs.truncateSync(priv, size);
    fs.writeFileSync(fx.logPath, baseLog);
  }
  await assertNothingLeft('after --skip-file-check');
});

test('a mapped file that vanished is refused', async () => {
  const priv = path.join(fx.dir, 'privfile');
  fs.renameSync(priv, `${priv}.away`);
  try {
    await assertRefused(runStasis(['restore', '-D', base, '-d']), priv, /no longer exists/, 'vanished file');
    // --skip-file-check does not make a missing file appear.
    await assertRefused(runStasis(['restore', '-D', base, '-d', '--skip-file-check']), priv, /no longer exists/, 'vanished file, skip check');
  } finally {
    fs.renameSync(`${priv}.away`, priv);
  }
});

test('an images dir that does not exist', async () => {
  const d = path.join(root, 'nowhere');
  await assertRefused(runStasis(['restore', '-D', d, '-d']), d, /no such directory/, 'no dir');
});

test('the pid is in use: restore while the original still runs (dump -R)', async () => {
  // (memory writes nothing to its log until SIGTERM: its files are as dumped.)
  const live = await Fixture.start('memory');
  try {
    const d = path.join(root, 'live');
    const r = runStasis(['dump', '-t', String(live.pid), '-D', d, '-R']);
    assert.equal(r.status, 0, describeCli(r));
    const rr = runStasis(['restore', '-D', d, '-d']);
    assert.equal(rr.status, 1, describeCli(rr));
    assert.match(rr.stderr.trim(), new RegExp(`^stasis: pid ${live.pid} is already in use`));
    assert.equal(rr.stderr.trim().split('\n').length, 1);
    reapZombies();
    assert.deepEqual(descendantsOf().map((p) => `${p}: ${cmdline(p)}`), [`${live.pid}: ${cmdline(live.pid)}`], 'only the original is there');
    await live.assertCounting();
    const { log } = await live.terminate();
    assert.match(log, /^PASS$/m, log);
  } finally {
    await live.kill();
  }
});

/** Dump `fx` (killed), then hold `pid` with the pidgrab fixture and restore: refused, naming it. */
async function refusedWhileHeld(fxd: Fixture, pid: number, re: RegExp, allPids: number[]): Promise<void> {
  const d = path.join(root, `held-${fxd.name}`);
  const r = runStasis(['dump', '-t', String(fxd.pid), '-D', d]);
  assert.equal(r.status, 0, describeCli(r));
  await fxd.reap();
  await waitGone(allPids, 5000);
  const grab = await Fixture.start('pidgrab', { args: [String(pid)] });
  try {
    assert.equal(grab.manifest.values.get('GRABBED')?.[0], String(pid));
    const rr = runStasis(['restore', '-D', d, '-d']);
    assert.equal(rr.status, 1, describeCli(rr));
    assert.equal(rr.stderr.trim().split('\n').length, 1, rr.stderr);
    assert.match(rr.stderr.trim(), re);
    reapZombies();
    assert.deepEqual(descendantsOf().sort((a, b) => a - b), [grab.pid, pid].sort((a, b) => a - b), 'only the holder and its child');
    for (const p of allPids) if (p !== pid) assert.ok(!fs.existsSync(`/proc/${p}`), `pid ${p} not taken by a half restore`);
    const { log } = await grab.terminate();
    assert.match(log, /^PASS$/m, log);
  } finally {
    await grab.kill();
  }
  // Free again: it restores.
  const { pid: back } = restoreDetached(d);
  fxd.restored();
  assert.equal(back, fxd.pid);
  const { status, log } = await fxd.terminate();
  assert.match(log, /^PASS$/m, log);
  assert.equal(status.kind, 'exited');
  await waitGone(allPids, 5000);
}

test('a pid the tree needs is in use (a grandchild\'s): refused before anything is created', async () => {
  const tree = await Fixture.start('tree', { extraFds: true });
  try {
    const ids = new Map([...tree.log().matchAll(/^PROC (\w) (\d+) /gm)].map((m) => [m[1], Number(m[2])]));
    const g = ids.get('G')!;
    await refusedWhileHeld(tree, g, new RegExp(`^stasis: pid ${g} is already in use; cannot restore process ${g}$`), [...ids.values()]);
  } finally {
    await tree.kill();
  }
});

test('a TID a thread needs is in use: refused before anything is created', async () => {
  const w = await Fixture.start('waiters', { pthread: true, extraFds: true });
  try {
    const tids = [...w.log().matchAll(/^THREAD \w+ (\d+) /gm)].map((m) => Number(m[1]));
    assert.equal(tids.length, 4);
    // One round of reports, so that every worker has counted (its self-check wants it).
    tryKill(w.pid, abi.SIG.SIGUSR1);
    await waitFor('4 reports', () => [...w.log().matchAll(/^REPORT 1 /gm)].length === 4, 5000);
    const t = tids[2];
    await refusedWhileHeld(w, t, new RegExp(`^stasis: pid ${t} is already in use; cannot restore thread ${t} of ${w.pid}$`), [w.pid]);
  } finally {
    await w.kill();
  }
});

// ---------------------------------------------------------------- failure injection

// Every failure point: the steps around the per-process phases, and each
// declared phase (so that a phase added later is injected too).
const PHASES = restoreSteps();

test('every failure point the restore is known to have is injected', () => {
  for (const p of ['stub', 'clone', 'address-space', 'pages', 'files', 'thread-state', 'pending-signals', 'registers']) {
    assert.ok(PHASES.includes(p), `phase ${p}`);
  }
});

for (const phase of PHASES) {
  test(`STASIS_FAIL_AT=${phase}: exit 1 naming the phase, nothing left`, async () => {
    const r = runStasis(['restore', '-D', base, '-d'], { STASIS_FAIL_AT: phase });
    assert.equal(r.status, 1, describeCli(r));
    const lines = r.stderr.trimEnd().split('\n');
    assert.equal(lines.length, 1, `one line: ${r.stderr}`);
    assert.match(lines[0], new RegExp(`^stasis: .*\\b${phase}\\b`));
    await assertNothingLeft(phase);
  });

  test(`STASIS_FAIL_AT=${phase}:kill: restorer SIGKILLed, nothing left, the images still restore`, async () => {
    const r = runStasis(['restore', '-D', base, '-d'], { STASIS_FAIL_AT: `${phase}:kill` });
    assert.equal(r.signal, 'SIGKILL', describeCli(r));
    try {
      await assertNothingLeft(`${phase}:kill`);
    } finally {
      // Whatever the outcome, nothing may stay for the next test.
      for (const p of descendantsOf()) tryKill(p, abi.SIG.SIGKILL);
      await waitGone(descendantsOf(), 5000);
    }
    await assertRestores(`after ${phase}:kill`);
  });
}

test('after every failure the images restore and the task passes its self-check', async () => {
  fs.writeFileSync(fx.logPath, baseLog);
  const { pid } = restoreDetached(base);
  fx.restored();
  assert.equal(pid, fx.pid);
  const { status, log } = await fx.terminate();
  assert.match(log.slice(baseLog.length), /^PASS$/m, log);
  assert.deepEqual(status, { kind: 'exited', pid: fx.pid, code: 0 });
});
