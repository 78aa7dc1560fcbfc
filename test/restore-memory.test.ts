// Memory restore: every kind of mapping comes back at its address with its
// protection, offset and file, and with its contents (heap, anonymous memory
// with untouched holes reading as zero, read-only, PROT_NONE, write-only,
// MAP_SHARED anonymous, private file mapping with dirtied pages, shared file
// mapping, stack, brk) — through two dump → restore round trips.
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  Fixture, initHarness, runStasis, describeCli, tmpDir, restoreDetached, readMapsText, parseMapsText, mappingOf,
  pattern, statFields, loadDumpedMemory, dumpedBytes, reapZombies, PAGE,
} from './harness';

const EXPECTED_REGIONS = [
  'data', 'bss', 'heap', 'stack', 'anon-a', 'anon-b', 'anon-c', 'protnone', 'wronly', 'shanon', 'rdonly',
  'privfile-dirty1', 'privfile-dirty2', 'privfile-dirty5',
];

let fx: Fixture;
let root: string;
/** What the process looked like before its first dump. */
let before0: Snapshot;

before(async () => {
  initHarness();
  root = tmpDir('rmemory');
  fx = await Fixture.start('memory');
});

after(async () => {
  await fx?.kill();
  fs.rmSync(root, { recursive: true, force: true });
});

interface Snapshot {
  maps: string[];
  /** /proc/PID/stat fields set by PR_SET_MM_MAP (code, data, brk, stack, args, env). */
  mm: Record<string, string>;
  auxv: string;
  cmdline: string;
  environ: string;
  exe: string;
}

// Field numbers of proc(5) for /proc/PID/stat (1-based; statFields() starts at field 3).
const MM_FIELDS: Record<string, number> = {
  startcode: 26, endcode: 27, startstack: 28, start_data: 45, end_data: 46, start_brk: 47,
  arg_start: 48, arg_end: 49, env_start: 50, env_end: 51,
};

/**
 * /proc/PID/maps lines as "range perms offset dev inode path", except that a
 * shared anonymous mapping's inode (a new shmem object after a restore, as
 * with CRIU) is left out.
 */
function normMaps(text: string): string[] {
  return text.split('\n').filter(Boolean).map((line) => {
    const w = line.split(/\s+/);
    const p = w.slice(5).join(' ');
    if (p.startsWith('/dev/zero') || p.startsWith('/SYSV')) w[4] = '(shmem)';
    return [w[0], w[1], w[2], w[3], w[4], p].join(' ');
  });
}

function snapshot(pid: number): Snapshot {
  const f = statFields(pid);
  const mm: Record<string, string> = {};
  for (const [k, n] of Object.entries(MM_FIELDS)) mm[k] = f[n - 3];
  return {
    maps: normMaps(readMapsText(pid)),
    mm,
    auxv: fs.readFileSync(`/proc/${pid}/auxv`).toString('hex'),
    cmdline: fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8'),
    environ: fs.readFileSync(`/proc/${pid}/environ`, 'utf8'),
    exe: fs.readlinkSync(`/proc/${pid}/exe`),
  };
}

function readMem(pid: number, addr: bigint, len: number): Buffer {
  const fd = fs.openSync(`/proc/${pid}/mem`, 'r');
  try {
    const b = Buffer.alloc(len);
    const n = fs.readSync(fd, b, 0, len, Number(addr));
    assert.equal(n, len, `read of ${len} bytes at 0x${addr.toString(16)}`);
    return b;
  } finally {
    fs.closeSync(fd);
  }
}

function firstDiff(a: Buffer, b: Buffer): number {
  let i = 0;
  while (i < a.length && a[i] === b[i]) i++;
  return i;
}

/** Every REGION holds its pattern and every HOLE reads as zeros, in the live process. */
function assertLiveContents(what: string): void {
  assert.deepEqual(fx.manifest.regions.map((r) => r.name), EXPECTED_REGIONS);
  for (const r of fx.manifest.regions) {
    const got = readMem(fx.pid, r.addr, r.len);
    const want = pattern(r.seed, r.len);
    if (!got.equals(want)) {
      const i = firstDiff(got, want);
      assert.fail(`${what}: region ${r.name} at 0x${r.addr.toString(16)}: byte ${i} is ${got[i]}, expected ${want[i]}`);
    }
  }
  assert.equal(fx.manifest.holes.length, 3);
  for (const h of fx.manifest.holes) {
    const got = readMem(fx.pid, h.addr, h.len);
    assert.ok(got.equals(Buffer.alloc(h.len)), `${what}: hole ${h.name} reads as zeros (byte ${firstDiff(got, Buffer.alloc(h.len))} is not)`);
  }
  // Clean pages of the private file mapping read as the file does.
  const priv = fx.manifest.values.get('PRIVFILE')!;
  const privStart = BigInt(priv[0]);
  const dirty = new Set(priv.slice(2).map(Number));
  const file = fs.readFileSync(path.join(fx.dir, 'privfile'));
  for (let i = 0; i < Number(priv[1]) / PAGE; i++) {
    if (dirty.has(i)) continue;
    assert.ok(readMem(fx.pid, privStart + BigInt(i * PAGE), PAGE).equals(file.subarray(i * PAGE, (i + 1) * PAGE)),
      `${what}: clean page ${i} of the private file mapping reads as the file`);
  }
  // The shared file mapping shows the file.
  const shared = fx.manifest.values.get('SHAREDFILE')!;
  const sf = fs.readFileSync(path.join(fx.dir, 'sharedfile'));
  assert.ok(readMem(fx.pid, BigInt(shared[0]), Number(shared[1])).equals(sf), `${what}: shared file mapping reads as the file`);
  assert.ok(sf.equals(pattern(9, sf.length)), `${what}: the shared file holds what the process wrote through its mapping`);
}

function assertSameLayout(what: string, now: Snapshot): void {
  assert.deepEqual(now.maps, before0.maps, `${what}: /proc/PID/maps as before the first dump`);
  assert.deepEqual(now.mm, before0.mm, `${what}: code/data/brk/stack/arg/env addresses as before`);
  assert.equal(now.auxv, before0.auxv, `${what}: auxv as before`);
  assert.equal(now.cmdline, before0.cmdline, `${what}: cmdline as before`);
  assert.equal(now.environ, before0.environ, `${what}: environ as before`);
  assert.equal(now.exe, before0.exe, `${what}: /proc/PID/exe as before`);
}

test('the fixture built every kind of mapping it claims', () => {
  const maps = parseMapsText(readMapsText(fx.pid));
  const region = (n: string) => fx.manifest.regions.find((r) => r.name === n)!;
  const at = (n: string) => mappingOf(maps, region(n).addr);
  assert.equal(at('heap')?.path, '[heap]');
  assert.equal(at('stack')?.path, '[stack]');
  assert.equal(at('protnone')?.perms, '---p');
  assert.equal(at('wronly')?.perms, '-w-p');
  assert.equal(at('rdonly')?.perms, 'r--p');
  assert.equal(at('shanon')?.perms, 'rw-s');
  assert.match(at('shanon')?.path ?? '', /^\/dev\/zero/);
  assert.match(at('data')?.path ?? '', /\/memory$/);
  const priv = mappingOf(maps, BigInt(fx.manifest.values.get('PRIVFILE')![0]));
  assert.equal(priv?.perms, 'rw-p');
  assert.match(priv?.path ?? '', /privfile$/);
  const shared = mappingOf(maps, BigInt(fx.manifest.values.get('SHAREDFILE')![0]));
  assert.equal(shared?.perms, 'rw-s');
  assert.match(shared?.path ?? '', /sharedfile$/);
  assertLiveContents('before the dump');
  before0 = snapshot(fx.pid);
});

for (const round of [1, 2]) {
  test(`round ${round}: dump → restore -d: same maps, same contents, running`, async () => {
    assert.ok(before0, 'the first test took the snapshot');
    const dir = path.join(root, `images-${round}`);
    if (round > 1) assertSameLayout(`before dump ${round}`, snapshot(fx.pid));
    const r = runStasis(['dump', '-t', String(fx.pid), '-D', dir]);
    assert.equal(r.status, 0, describeCli(r));
    const st = await fx.reap();
    assert.equal(st.kind, 'signaled');
    assert.deepEqual(reapZombies(), []);

    // The images hold the patterns (a restore from bad images proves nothing).
    const mem = loadDumpedMemory(dir, fx.pid);
    for (const reg of fx.manifest.regions) {
      assert.ok(dumpedBytes(mem, reg.addr, reg.len).equals(pattern(reg.seed, reg.len)), `dump ${round}: region ${reg.name} in the image`);
    }

    const { pid, r: rr } = restoreDetached(dir);
    fx.restored();
    assert.equal(pid, fx.pid);
    assert.doesNotMatch(rr.stderr, /warning/, rr.stderr);
    assertSameLayout(`after restore ${round}`, snapshot(fx.pid));
    assertLiveContents(`after restore ${round}`);
    await fx.assertCounting();
  });
}

test('after two round trips the fixture passes its self-check (contents, sharing, file coherence, brk)', async () => {
  const { status, log } = await fx.terminate();
  assert.match(log, /^PASS$/m, log);
  assert.deepEqual(status, { kind: 'exited', pid: fx.pid, code: 0 }, log);
});

/** VmFlags of each VMA of /proc/PID/smaps, by start address. */
function vmFlags(pid: number): Map<string, string> {
  const out = new Map<string, string>();
  let cur = '';
  for (const line of fs.readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
    const m = /^([0-9a-f]+)-[0-9a-f]+ /.exec(line);
    if (m) cur = m[1];
    else if (line.startsWith('VmFlags:')) out.set(cur, line.slice(8).trim().split(/\s+/).sort().join(' '));
  }
  return out;
}

test('madvise() advice and mlock of a VMA survive dump → restore', async () => {
  const m = await Fixture.start('madvise');
  try {
    const regions = [...m.log().matchAll(/^ADV (\w+) (0x[0-9a-f]+) (\d+)$/gm)].map((x) => ({ name: x[1], start: BigInt(x[2]).toString(16) }));
    assert.equal(regions.length, 9);
    const flags0 = vmFlags(m.pid);
    const maps0 = normMaps(readMapsText(m.pid));
    const dir = path.join(root, 'madvise');
    const r = runStasis(['dump', '-t', String(m.pid), '-D', dir]);
    assert.equal(r.status, 0, describeCli(r));
    await m.reap();
    restoreDetached(dir);
    m.restored();
    const flags1 = vmFlags(m.pid);
    const lost = regions.filter((g) => flags1.get(g.start) !== flags0.get(g.start))
      .map((g) => `${g.name}: [${flags0.get(g.start)}] became [${flags1.get(g.start) ?? 'no VMA'}]`);
    assert.deepEqual(lost, [], 'VmFlags of the advised regions');
    assert.deepEqual(normMaps(readMapsText(m.pid)), maps0, 'maps as before');
    const { status, log } = await m.terminate();
    assert.match(log, /^PASS$/m, log);
    assert.equal(status.kind, 'exited');
  } finally {
    await m.kill();
  }
});
