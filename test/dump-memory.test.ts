// Memory dump: the pages of every kind of mapping land in pages-N.img at the
// addresses pagemap-PID.img gives, and only those that should.
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  Fixture, initHarness, runStasis, describeCli, tmpDir, loadDumpedMemory, dumpedBytes, entriesIn,
  pattern, parseMapsText, readMapsText, mappingOf, PAGE, type DumpedMemory,
} from './harness';

const EXPECTED_REGIONS = [
  'data', 'bss', 'heap', 'stack', 'anon-a', 'anon-b', 'anon-c', 'protnone', 'wronly', 'shanon', 'rdonly',
  'privfile-dirty1', 'privfile-dirty2', 'privfile-dirty5',
];

const cleanup: (() => Promise<void> | void)[] = [];
before(() => initHarness());
after(async () => {
  for (const f of cleanup.reverse()) await f();
});

async function startMemory(): Promise<Fixture> {
  const fx = await Fixture.start('memory');
  cleanup.push(() => fx.kill());
  return fx;
}

function imagesDir(): string {
  const d = path.join(tmpDir('img'), 'images'); // created by the dump itself
  cleanup.push(() => fs.rmSync(path.dirname(d), { recursive: true, force: true }));
  return d;
}

/** Every REGION's bytes, read from the image, equal its pattern. Returns how many were checked. */
function verifyRegions(fx: Fixture, mem: DumpedMemory): number {
  const names = fx.manifest.regions.map((r) => r.name);
  assert.deepEqual(names, EXPECTED_REGIONS, 'the fixture announced every region');
  let checked = 0;
  for (const r of fx.manifest.regions) {
    const got = dumpedBytes(mem, r.addr, r.len);
    const want = pattern(r.seed, r.len);
    if (!got.equals(want)) {
      let i = 0;
      while (got[i] === want[i]) i++;
      assert.fail(`region ${r.name} at 0x${r.addr.toString(16)}: byte ${i} is ${got[i]} in the image, expected ${want[i]}`);
    }
    checked++;
  }
  return checked;
}

test('dump -R: every region is in the image, the target runs on and passes its self-check', async () => {
  const fx = await startMemory();
  const dir = imagesDir();
  const maps = parseMapsText(readMapsText(fx.pid));

  // The fixture built what it claims (so the checks below are not vacuous).
  const region = (n: string) => fx.manifest.regions.find((r) => r.name === n)!;
  assert.equal(mappingOf(maps, region('heap').addr)?.path, '[heap]', 'heap region is in [heap]');
  assert.equal(mappingOf(maps, region('stack').addr)?.path, '[stack]', 'stack region is in [stack]');
  assert.equal(mappingOf(maps, region('protnone').addr)?.perms, '---p', 'PROT_NONE region');
  assert.equal(mappingOf(maps, region('wronly').addr)?.perms, '-w-p', 'write-only region');
  assert.equal(mappingOf(maps, region('rdonly').addr)?.perms, 'r--p', 'read-only region');
  assert.equal(mappingOf(maps, region('shanon').addr)?.perms, 'rw-s', 'MAP_SHARED anonymous region');
  assert.match(mappingOf(maps, region('shanon').addr)?.path ?? '', /^\/dev\/zero/, 'MAP_SHARED anonymous region is shmem');
  assert.deepEqual(fx.manifest.values.get('SHAREDANON'), [`0x${region('shanon').addr.toString(16)}`, String(region('shanon').len)]);
  assert.deepEqual(fx.manifest.values.get('RDONLY'), [`0x${region('rdonly').addr.toString(16)}`, String(region('rdonly').len)]);
  assert.match(mappingOf(maps, region('data').addr)?.path ?? '', /\/memory$/, '.data is in the binary\'s mapping');
  const priv = fx.manifest.values.get('PRIVFILE')!;
  const privStart = BigInt(priv[0]), privLen = Number(priv[1]);
  const dirty = priv.slice(2).map(Number);
  assert.deepEqual(dirty, [1, 2, 5]);
  assert.equal(mappingOf(maps, privStart)?.perms, 'rw-p');
  assert.match(mappingOf(maps, privStart)?.path ?? '', /privfile$/);
  const shared = fx.manifest.values.get('SHAREDFILE')!;
  const sharedStart = BigInt(shared[0]), sharedLen = Number(shared[1]);
  assert.equal(mappingOf(maps, sharedStart)?.perms, 'rw-s');

  const r = runStasis(['dump', '-t', String(fx.pid), '-D', dir, '-R']);
  assert.equal(r.status, 0, describeCli(r));
  assert.match(r.stderr, new RegExp(`dumped pid ${fx.pid} .*left running`));

  // Still alive, not traced, still counting.
  assert.ok(fx.alive, 'target alive after dump -R');
  await fx.assertCounting();

  // Image files: owner-only.
  const files = fs.readdirSync(dir);
  for (const want of ['inventory.img', 'pstree.img', `core-${fx.pid}.img`, `mm-${fx.pid}.img`, `pagemap-${fx.pid}.img`, 'files.img']) {
    assert.ok(files.includes(want), `${want} written (have ${files.join(' ')})`);
  }
  assert.equal(fs.statSync(dir).mode & 0o777, 0o700, 'images dir is 0700');
  for (const f of files) assert.equal(fs.statSync(path.join(dir, f)).mode & 0o777, 0o600, `${f} is 0600`);

  const mem = loadDumpedMemory(dir, fx.pid);
  assert.ok(mem.entries.length > 0);
  for (const e of mem.entries) {
    assert.equal(e.vaddr % BigInt(PAGE), 0n, 'entries are page aligned');
    assert.ok(e.nrPages > 0);
    assert.equal(e.flags, 4, 'PE_PRESENT');
  }
  // Entries are sorted and disjoint.
  for (let i = 1; i < mem.entries.length; i++) {
    const p = mem.entries[i - 1];
    assert.ok(p.vaddr + BigInt(p.nrPages * PAGE) <= mem.entries[i].vaddr, 'pagemap entries sorted, disjoint');
  }

  assert.equal(verifyRegions(fx, mem), EXPECTED_REGIONS.length);

  // Untouched (or zero-written) anonymous pages: no entry.
  assert.equal(fx.manifest.holes.length, 3);
  for (const h of fx.manifest.holes) {
    assert.deepEqual(entriesIn(mem, h.addr, h.addr + BigInt(h.len)), [], `hole ${h.name} has no pagemap entry`);
  }

  // Private file mapping: entries for exactly the dirtied pages.
  const privPages: number[] = [];
  for (const e of entriesIn(mem, privStart, privStart + BigInt(privLen))) {
    for (let i = 0; i < e.nrPages; i++) {
      const a = e.vaddr + BigInt(i * PAGE);
      if (a >= privStart && a < privStart + BigInt(privLen)) privPages.push(Number((a - privStart) / BigInt(PAGE)));
    }
  }
  assert.deepEqual(privPages, dirty, 'private file mapping: only the dirtied (COW) pages');

  // Shared file mapping: nothing, and its contents appear nowhere in the pages.
  assert.deepEqual(entriesIn(mem, sharedStart, sharedStart + BigInt(sharedLen)), [], 'no entry for the shared file mapping');
  for (const [file, seed] of [['sharedfile', 9], ['privfile', 7]] as const) {
    const fileBytes = fs.readFileSync(path.join(fx.dir, file));
    assert.ok(fileBytes.subarray(0, 256).equals(pattern(seed, 256)), `${file} has pattern ${seed}`);
  }
  assert.equal(mem.pages.indexOf(pattern(9, 256)), -1, 'shared mapping contents are not in pages img');
  assert.equal(mem.pages.indexOf(pattern(7, 256, 3 * PAGE)), -1, 'clean private file page not in pages img');

  const { status, log } = await fx.terminate();
  assert.match(log, /^PASS$/m, log);
  assert.deepEqual(status, { kind: 'exited', pid: fx.pid, code: 0 }, log);
});

test('dump without -R kills the target after a complete dump', async () => {
  const fx = await startMemory();
  const dir = imagesDir();
  const r = runStasis(['dump', '-t', String(fx.pid), '-D', dir]);
  assert.equal(r.status, 0, describeCli(r));
  assert.match(r.stderr, /killed$/m);
  const st = await fx.reap(5000);
  assert.equal(st.kind, 'signaled', `target ended with ${JSON.stringify(st)}`);
  assert.equal((st as { signal: number }).signal, 9, 'killed by SIGKILL');
  assert.doesNotMatch(fx.log(), /PASS|FAIL/, 'the target never got to its self-check');

  for (const f of ['inventory.img', 'pstree.img', `core-${fx.pid}.img`, `mm-${fx.pid}.img`, `ids-${fx.pid}.img`,
    `fs-${fx.pid}.img`, `pagemap-${fx.pid}.img`, 'files.img']) {
    assert.ok(fs.existsSync(path.join(dir, f)), `${f} written`);
  }
  // The images are those of the live process, not of a half-dead one.
  const mem = loadDumpedMemory(dir, fx.pid);
  assert.equal(verifyRegions(fx, mem), EXPECTED_REGIONS.length);
});
