// Integrity beyond CRIU (issue "Trust", item 5): a dump writes the size and
// SHA-256 of every file of the checkpoint into stasis-digest (pages files: a
// CRC-32 per 4 MiB chunk); a restore
// verifies every file before anything is created (--no-verify skips it) and
// reads no file the digest does not list; `stasis check-images` verifies
// alone. Every single-bit flip in any file of a checkpoint is refused.
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as crypto from 'node:crypto';
import * as zlib from 'node:zlib';
import {
  Fixture, initHarness, runStasis, describeCli, tmpDir, restoreDetached, reapZombies, descendantsOf, cmdline, crit,
  rewriteImage, ROOT, type CliResult,
} from './harness';
import { restore } from '../src/restore/restore';
import { checkImages, parseDigest, formatDigest, DIGEST_FILE, CHUNK_SIZE } from '../src/images/digest';
import { parts } from '../src/images/image';
import { FL_KIND } from '../src/images/criu';
import { ErrorCodes, StasisError } from '../src/errors';
import { tryKill, abi } from '../src/sys';

let fx: Fixture;
let root: string;
/** A good checkpoint of the counter (killed by its dump). */
let base: string;
let baseLog: string;
let n = 0;

before(async () => {
  initHarness();
  root = tmpDir('digest');
  base = path.join(root, 'base');
  fx = await Fixture.start('counter');
  const r = runStasis(['dump', '-t', String(fx.pid), '-D', base]);
  assert.equal(r.status, 0, describeCli(r));
  await fx.reap();
  baseLog = fx.log();
});

after(async () => {
  await fx?.kill();
  fs.rmSync(root, { recursive: true, force: true });
});

function copyBase(): string {
  const d = path.join(root, `case${n++}`);
  fs.cpSync(base, d, { recursive: true });
  return d;
}

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

function assertOneLine(r: CliResult, re: RegExp, what: string, status = 1): void {
  assert.equal(r.status, status, `${what}: ${describeCli(r)}`);
  assert.equal(r.stdout, '', `${what}: nothing on stdout`);
  const lines = r.stderr.trimEnd().split('\n');
  assert.equal(lines.length, 1, `${what}: one line: ${r.stderr}`);
  assert.doesNotMatch(r.stderr, /internal error|^\s+at /m, `${what}: no stack trace`);
  assert.match(lines[0], re, what);
}

/** Nothing was created: the dumped pid is free, we have no descendant. */
function assertNothingCreated(what: string): void {
  reapZombies();
  assert.ok(!fs.existsSync(`/proc/${fx.pid}`), `${what}: pid ${fx.pid} stays free`);
  assert.deepEqual(descendantsOf().map((p) => `${p}: ${cmdline(p)}`), [], `${what}: nothing left`);
}

async function assertRestores(d: string, what: string, args: string[] = []): Promise<void> {
  fs.writeFileSync(fx.logPath, baseLog);
  const { pid } = restoreDetached(d, args);
  fx.restored();
  assert.equal(pid, fx.pid, what);
  await fx.assertCounting();
  tryKill(fx.pid, abi.SIG.SIGKILL);
  await fx.reap();
}

/** A small seeded PRNG (xorshift32): a failing flip can be replayed with STASIS_FLIP_SEED. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    return x;
  };
}

test('the digest lists every file of the checkpoint with its size and SHA-256 (pages files: a CRC-32 per 4 MiB chunk); crit ignores it', () => {
  const raw = fs.readFileSync(path.join(base, DIGEST_FILE), 'latin1');
  assert.equal(raw.split('\n')[0], 'stasis-digest 3 sha256 crc32');
  const listing = parseDigest(DIGEST_FILE, Buffer.from(raw, 'latin1'));
  const files = fs.readdirSync(base).filter((f) => f !== DIGEST_FILE).sort();
  assert.deepEqual([...listing.keys()].sort(), files);
  const hash = (b: Buffer) => crypto.createHash('sha256').update(b).digest('hex');
  for (const f of files) {
    const data = fs.readFileSync(path.join(base, f));
    if (f.startsWith('pages-')) {
      const sums: string[] = [];
      for (let o = 0; o < data.length; o += CHUNK_SIZE) sums.push(zlib.crc32(data.subarray(o, Math.min(data.length, o + CHUNK_SIZE))).toString(16).padStart(8, '0'));
      assert.deepEqual(listing.get(f), { name: f, size: data.length, chunk: CHUNK_SIZE, chunks: sums, alg: 'crc32' }, f);
    } else {
      assert.deepEqual(listing.get(f), { name: f, size: data.length, sha256: hash(data) }, f);
    }
  }
  assert.ok(files.includes('inventory.img') && files.includes(`core-${fx.pid}.img`) && files.includes('pages-1.img'));
  assert.match(crit(['x', base, 'ps']), new RegExp(`^\\s*${fx.pid}\\s+\\d+\\s+\\d+\\s+counter$`, 'm'));
  assert.equal(fs.statSync(path.join(base, DIGEST_FILE)).mode & 0o777, 0o600);
});

test('check-images: exit 0 and a summary on a good checkpoint; --json', () => {
  const r = runStasis(['check-images', base]);
  assert.equal(r.status, 0, describeCli(r));
  const count = fs.readdirSync(base).length - 1;
  assert.match(r.stdout, new RegExp(`^${escapeRe(base)}: all ${count} files \\([0-9.]+ MiB\\) match stasis-digest\\n$`));
  const j = runStasis(['check-images', base, '--json']);
  assert.equal(j.status, 0, describeCli(j));
  const rep = JSON.parse(j.stdout) as { ok: boolean; files: { name: string; ok: boolean }[]; unlisted: string[] };
  assert.equal(rep.ok, true);
  assert.equal(rep.files.length, count);
  assert.ok(rep.files.every((f) => f.ok));
  assert.deepEqual(rep.unlisted, []);
});

test('every single-bit flip in any file of a checkpoint is refused before anything is created', async (t) => {
  const seed = Number(process.env.STASIS_FLIP_SEED ?? (Date.now() & 0x7fffffff));
  t.diagnostic(`STASIS_FLIP_SEED=${seed}`);
  const next = rng(seed);
  const d = copyBase();
  const digestPath = path.join(d, DIGEST_FILE);
  const files = fs.readdirSync(d).sort();
  assert.ok(files.includes(DIGEST_FILE));
  let flips = 0;
  for (const file of files) {
    const p = path.join(d, file);
    const size = fs.statSync(p).size;
    assert.ok(size > 0, `${file} is not empty`);
    // Every byte of small files; otherwise the first, the last and 20 others.
    const positions = size <= 22 ? [...Array(size).keys()] : [0, size - 1, ...Array.from({ length: 20 }, () => next() % size)];
    for (const pos of positions) {
      const bit = next() % 8;
      const what = `${file}: bit ${bit} of byte ${pos} (seed ${seed})`;
      const fd = fs.openSync(p, 'r+');
      const b = Buffer.alloc(1);
      fs.readSync(fd, b, 0, 1, pos);
      b[0] ^= 1 << bit;
      fs.writeSync(fd, b, 0, 1, pos);
      try {
        // The restore itself, in this process: it must refuse before it creates anything.
        assert.throws(() => restore({ dir: d, detach: true }), (e: StasisError) => {
          assert.equal(e.code, ErrorCodes.CORRUPT, `${what}: ${e.message}`);
          assert.ok(e.message.includes(p) && e.message.includes(digestPath), `${what}: names the file and the digest: ${e.message}`);
          return true;
        }, what);
        assertNothingCreated(what);
        // check-images reports it: the file fails, or the digest itself does not read.
        let rep: ReturnType<typeof checkImages> | undefined;
        try { rep = checkImages(d); } catch (e) {
          assert.equal(file, DIGEST_FILE, `${what}: only a damaged digest stops check-images: ${(e as Error).message}`);
          assert.equal((e as StasisError).code, ErrorCodes.CORRUPT);
        }
        if (rep) {
          assert.equal(rep.ok, false, what);
          const bad = rep.files.filter((f) => !f.ok);
          assert.ok(bad.some((f) => f.problem!.includes(p)), `${what}: check-images names the file: ${JSON.stringify(bad)}`);
        }
        if (pos === 0 || pos === size - 1) {
          // The first and last byte through the command line too.
          assertOneLine(runStasis(['restore', '-D', d, '-d']), new RegExp(`^stasis: .*${escapeRe(p)}.*${escapeRe(digestPath)}|^stasis: ${escapeRe(digestPath)}`), `${what}: stasis restore`);
          assertNothingCreated(`${what}: stasis restore`);
          const c = runStasis(['check-images', d]);
          assert.equal(c.status, 1, `${what}: ${describeCli(c)}`);
          assert.ok((c.stdout + c.stderr).includes(p), `${what}: check-images names ${p}: ${describeCli(c)}`);
        }
        flips++;
      } finally {
        b[0] ^= 1 << bit;
        fs.writeSync(fd, b, 0, 1, pos);
        fs.closeSync(fd);
      }
    }
  }
  t.diagnostic(`${flips} single-bit flips in ${files.length} files, every one refused`);
  assert.ok(flips >= files.length * 3, `${flips} flips`);
  // Put back, the copy restores.
  await assertRestores(d, 'the copy after the flips');
});

test('no digest: refused, naming it and --no-verify (criu\'s images have none); --no-verify restores', async () => {
  const d = copyBase();
  fs.rmSync(path.join(d, DIGEST_FILE));
  const re = new RegExp(`^stasis: ${escapeRe(path.join(d, DIGEST_FILE))}: missing, so the images cannot be verified .*--no-verify restores without verifying\\)$`);
  assertOneLine(runStasis(['restore', '-D', d, '-d']), re, 'restore');
  assertNothingCreated('no digest');
  assertOneLine(runStasis(['check-images', d]), re, 'check-images');
  await assertRestores(d, 'no digest, --no-verify', ['--no-verify']);
  // Not even an inventory: not a checkpoint at all.
  fs.rmSync(path.join(d, 'inventory.img'));
  assertOneLine(runStasis(['restore', '-D', d, '-d']), new RegExp(`^stasis: ${escapeRe(path.join(d, 'inventory.img'))}: missing: not a complete checkpoint$`), 'no inventory');
});

test('a file the digest does not list is never read (with --no-verify it is)', async () => {
  const d = copyBase();
  // A stray file-locks.img: read, its lock of a process not in the tree is refused.
  rewriteImage(d, 'file-locks.img', 'FILE_LOCKS', parts('file_lock_entry', [{ flag: FL_KIND.POSIX, type: 1, pid: 999999, fd: 1, start: 0n, len: 0n }]));
  const c = runStasis(['check-images', d]);
  assert.equal(c.status, 0, describeCli(c));
  assert.match(c.stdout, new RegExp(`^${escapeRe(path.join(d, 'file-locks.img'))}: not listed in the digest \\(ignored by a restore\\)$`, 'm'));
  assertOneLine(runStasis(['restore', '-D', d, '-d', '--no-verify']), /file-locks\.img: lock of pid 999999, not in the tree$/, '--no-verify reads it');
  assertNothingCreated('stray file-locks.img, --no-verify');
  await assertRestores(d, 'stray file-locks.img ignored');
});

test('the library: restore rejects a damaged checkpoint with STASIS_CORRUPT; verify: false restores it anyway', async () => {
  const d = copyBase();
  const pages = path.join(d, 'pages-1.img');
  // The digest says other contents (the images themselves are good: verify: false restores them).
  const digest = path.join(d, DIGEST_FILE);
  const text = fs.readFileSync(digest, 'latin1');
  // pages-1.img is listed per chunk: its first chunk's CRC-32 is on the line after its own.
  const lines = text.split('\n');
  const hash = lines[lines.findIndex((l) => l.endsWith(' pages-1.img')) + 1].slice(1);
  assert.match(hash, /^[0-9a-f]{8}$/);
  fs.writeFileSync(digest, text.replace(hash, (hash[0] === '0' ? '1' : '0') + hash.slice(1)), 'latin1');
  const lib = await import('../src/index');
  await assert.rejects(lib.restore({ imagesDir: d }), (e: StasisError) => {
    assert.equal(e.code, 'STASIS_CORRUPT');
    assert.match(e.message, new RegExp(`^${escapeRe(pages)}: contents do not match their CRC-32 in ${escapeRe(path.join(d, DIGEST_FILE))}`));
    return true;
  });
  assertNothingCreated('library, damaged');
  const rep = await lib.checkImages(d);
  assert.equal(rep.ok, false);
  assert.deepEqual(rep.files.filter((f) => !f.ok).map((f) => f.name), ['pages-1.img']);
  fs.writeFileSync(fx.logPath, baseLog);
  const r = await lib.restore({ imagesDir: d, verify: false });
  fx.restored();
  assert.equal(r.pid, fx.pid);
  await fx.assertCounting();
  tryKill(fx.pid, abi.SIG.SIGKILL);
  await fx.reap();
});

test('a 48 MiB checkpoint (its pages hashed by the dump\'s hashing thread): digest right, a flip refused, restores', async () => {
  const big = await Fixture.start('bigmem', { srcDir: path.join(ROOT, 'bench', 'fixtures'), outDir: path.join(ROOT, 'dist', 'bench-bin'), args: ['48'], readyTimeoutMs: 60000 });
  try {
    const d = path.join(root, 'big');
    const r = runStasis(['dump', '-t', String(big.pid), '-D', d]);
    assert.equal(r.status, 0, describeCli(r));
    await big.reap();
    const pages = path.join(d, 'pages-1.img');
    const listing = parseDigest(DIGEST_FILE, fs.readFileSync(path.join(d, DIGEST_FILE)));
    const data = fs.readFileSync(pages);
    assert.ok(data.length >= 48 << 20, `${data.length} bytes of pages`);
    const sums: string[] = [];
    for (let o = 0; o < data.length; o += CHUNK_SIZE) sums.push(zlib.crc32(data.subarray(o, Math.min(data.length, o + CHUNK_SIZE))).toString(16).padStart(8, '0'));
    assert.deepEqual(listing.get('pages-1.img'), { name: 'pages-1.img', size: data.length, chunk: CHUNK_SIZE, chunks: sums, alg: 'crc32' });
    const fd = fs.openSync(pages, 'r+');
    try {
      const at = (data.length >> 1) + 12345;
      fs.writeSync(fd, Buffer.from([data[at] ^ 0x40]), 0, 1, at);
      assertOneLine(runStasis(['restore', '-D', d, '-d']), new RegExp(`^stasis: ${escapeRe(pages)}: contents do not match their CRC-32 in ${escapeRe(path.join(d, DIGEST_FILE))} \\(chunk ${Math.floor(at / CHUNK_SIZE)}, bytes ${Math.floor(at / CHUNK_SIZE) * CHUNK_SIZE} to ${Math.min(data.length, (Math.floor(at / CHUNK_SIZE) + 1) * CHUNK_SIZE)}\\): the checkpoint is damaged \\(--no-verify restores it anyway\\)$`), 'a flip in the big pages file');
      reapZombies();
      assert.ok(!fs.existsSync(`/proc/${big.pid}`), 'nothing created');
      fs.writeSync(fd, Buffer.from([data[at]]), 0, 1, at);
    } finally {
      fs.closeSync(fd);
    }
    const { pid } = restoreDetached(d);
    big.restored();
    assert.equal(pid, big.pid);
    const { status, log } = await big.terminate(30000);
    assert.match(log, /^PASS$/m, log);
    assert.equal(status.kind, 'exited');
  } finally {
    await big.kill();
  }
});

test('a checkpoint with a version 1 digest (older stasis: every file whole) still verifies, refuses a flip, restores, lazily too', async () => {
  const d = copyBase();
  const hash = (b: Buffer) => crypto.createHash('sha256').update(b).digest('hex');
  const files = fs.readdirSync(d).filter((f) => f !== DIGEST_FILE);
  const v1 = formatDigest(files.map((f) => { const b = fs.readFileSync(path.join(d, f)); return { name: f, size: b.length, sha256: hash(b) }; }), 1);
  fs.writeFileSync(path.join(d, DIGEST_FILE), v1);
  assert.equal(v1.toString('latin1').split('\n')[0], 'stasis-digest 1 sha256');
  assert.ok(checkImages(d).ok);
  const pages = path.join(d, 'pages-1.img');
  const data = fs.readFileSync(pages);
  const at = data.length - 100;
  const fd = fs.openSync(pages, 'r+');
  try {
    fs.writeSync(fd, Buffer.from([data[at] ^ 0x02]), 0, 1, at);
    for (const lazy of [[], ['--lazy-pages']]) {
      assertOneLine(runStasis(['restore', '-D', d, '-d', ...lazy]), new RegExp(`^stasis: ${escapeRe(pages)}: contents do not match their SHA-256 in ${escapeRe(path.join(d, DIGEST_FILE))}: the checkpoint is damaged`), `a flip under a v1 digest ${lazy.join(' ')}`);
      assertNothingCreated(`v1 flip ${lazy.join(' ')}`);
    }
    fs.writeSync(fd, Buffer.from([data[at]]), 0, 1, at);
  } finally {
    fs.closeSync(fd);
  }
  await assertRestores(d, 'v1 digest');
  await assertRestores(d, 'v1 digest, lazily', ['--lazy-pages']);
});

test('after all that, the good checkpoint restores and the counter passes its self-check', async () => {
  fs.writeFileSync(fx.logPath, baseLog);
  const { pid } = restoreDetached(base);
  fx.restored();
  assert.equal(pid, fx.pid);
  const { status, log } = await fx.terminate();
  assert.match(log.slice(baseLog.length), /^PASS$/m, log);
  assert.deepEqual(status, { kind: 'exited', pid: fx.pid, code: 0 });
});
