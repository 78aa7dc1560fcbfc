// The digest file (src/images/digest.ts): its format round-trips, and no
// single-bit change of it goes unnoticed — every flip is either refused by
// the parser or yields a listing that differs from the true one (a size, a
// hash or a name that the files on disk then fail to match).
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as crypto from 'node:crypto';
import { formatDigest, parseDigest, sha256, DigestBuilder, ChunkedHasher, verifyImages, checkImages, CHUNK_SIZE, DIGEST_FILE, type DigestEntry } from '../../src/images/digest';
import { ImageReader } from '../../src/images/image';
import { crc32Js } from '../../src/images/chunk-sum';
import { ErrorCodes } from '../../src/errors';

const ENTRIES: DigestEntry[] = [
  { name: 'pages-1.img', size: 102400, sha256: sha256(Buffer.alloc(102400, 1)) },
  { name: 'core-4242.img', size: 1682, sha256: sha256(Buffer.from('core')) },
  { name: 'inventory.img', size: 0, sha256: sha256(Buffer.alloc(0)) },
];
/** A chunked entry (version 2): 3 chunks of 8 KiB, the last one shorter. */
const PAGES2 = Buffer.alloc(20480, 7);
const CHUNKED: DigestEntry = { name: 'pages-2.img', size: 20480, chunk: 8192, chunks: [sha256(PAGES2.subarray(0, 8192)), sha256(PAGES2.subarray(8192, 16384)), sha256(PAGES2.subarray(16384))], alg: 'sha256' };
const V2 = [...ENTRIES, CHUNKED];
/** The same chunks by CRC-32 (version 3), beside one by SHA-256 (still allowed in version 3). */
const PAGES3 = Buffer.from(Array.from({ length: 20480 }, (_, i) => (i * 31) & 0xff));
const CRC_CHUNKED: DigestEntry = { name: 'pages-3.img', size: 20480, chunk: 8192, chunks: chunkSums(PAGES3, 8192, 'crc32'), alg: 'crc32' };
const V3 = [...V2, CRC_CHUNKED];

/** CRC-32 (IEEE 802.3, reflected, as zlib's), bit by bit: independent of the code under test. */
function crc32(data: Uint8Array): number {
  let c = 0xffffffff;
  for (const byte of data) {
    c ^= byte;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0xedb88320 : c >>> 1;
  }
  return (c ^ 0xffffffff) >>> 0;
}

/** Per-chunk sums of `data`, computed here independently of digest.ts. */
function chunkSums(data: Buffer, chunk: number, alg: 'sha256' | 'crc32' = 'crc32'): string[] {
  const out: string[] = [];
  for (let o = 0; o < data.length; o += chunk) {
    const part = data.subarray(o, Math.min(data.length, o + chunk));
    out.push(alg === 'sha256' ? crypto.createHash('sha256').update(part).digest('hex') : crc32(part).toString(16).padStart(8, '0'));
  }
  return out;
}

test('CRC-32 of the check value and of chunks: zlib (through digest.ts), the fallback for a Node without it, and the bit-by-bit one here agree', () => {
  assert.equal(crc32(Buffer.from('123456789')), 0xcbf43926);
  const some = crypto.randomBytes(100003);
  assert.equal(crc32Js(some), crc32(some));
  assert.equal(crc32Js(some.subarray(5000), crc32Js(some.subarray(0, 5000))), crc32(some), 'continued from a previous sum, as zlib.crc32(data, value)');
  const data = crypto.randomBytes((1 << 20) + 12345);
  const h = new ChunkedHasher(64 << 10);
  for (let o = 0; o < data.length; o += 77777) h.update(data.subarray(o, o + 77777));
  assert.deepEqual(h.finish('pages-1.img').chunks, chunkSums(data, 64 << 10));
});

test('format v3: pages chunks by CRC-32 (8 hex digits), SHA-256 chunks and whole files as in v2; parse gives the entries back', () => {
  const buf = formatDigest(V3);
  const text = buf.toString();
  assert.equal(text.split('\n')[0], 'stasis-digest 3 sha256 crc32');
  assert.ok(text.endsWith(['20480 *8192 pages-2.img', ...CHUNKED.chunks!.map((c) => ` ${c}`), '20480 crc32*8192 pages-3.img', ...CRC_CHUNKED.chunks!.map((c) => ` ${c}`), ''].join('\n')), text);
  assert.match(CRC_CHUNKED.chunks![0], /^[0-9a-f]{8}$/);
  const back = parseDigest('D/stasis-digest', buf);
  assert.deepEqual(back.get('pages-3.img'), CRC_CHUNKED);
  assert.deepEqual(back.get('pages-2.img'), CHUNKED);
  // A version 2 digest cannot hold CRC-32 chunks.
  assert.throws(() => formatDigest(V3, 2), /a version 2 digest has no crc32 chunks/);
});

test('format v2: header, sorted entries, chunk lines after a chunked entry, final newline; parse gives the entries back', () => {
  const buf = formatDigest(V2, 2);
  assert.equal(buf.toString(), [
    'stasis-digest 2 sha256',
    `1682 ${ENTRIES[1].sha256} core-4242.img`,
    `0 ${ENTRIES[2].sha256} inventory.img`,
    `102400 ${ENTRIES[0].sha256} pages-1.img`,
    '20480 *8192 pages-2.img',
    ...CHUNKED.chunks!.map((c) => ` ${c}`),
    '',
  ].join('\n'));
  const back = parseDigest('D/stasis-digest', buf);
  assert.deepEqual(back.get('pages-2.img'), CHUNKED);
  assert.deepEqual([...back.values()].sort((a, b) => a.name.localeCompare(b.name)), [...V2].sort((a, b) => a.name.localeCompare(b.name)));
  // An empty chunked file has no chunk lines.
  const empty: DigestEntry = { name: 'pages-9.img', size: 0, chunk: 4096, chunks: [], alg: 'crc32' };
  assert.deepEqual(parseDigest('d', formatDigest([empty])).get('pages-9.img'), empty);
});

test('format v1 (older checkpoints): still read, exactly as written', () => {
  const buf = formatDigest(ENTRIES, 1);
  const lines = buf.toString().split('\n');
  assert.equal(lines[0], 'stasis-digest 1 sha256');
  assert.deepEqual(lines.slice(1, 4).map((l) => l.split(' ')[2]), ['core-4242.img', 'inventory.img', 'pages-1.img']);
  assert.equal(lines[3], `102400 ${sha256(Buffer.alloc(102400, 1))} pages-1.img`);
  assert.equal(lines[4], '');
  assert.equal(lines.length, 5);
  const back = parseDigest('D/stasis-digest', buf);
  assert.deepEqual([...back.values()].sort((a, b) => a.name.localeCompare(b.name)), [...ENTRIES].sort((a, b) => a.name.localeCompare(b.name)));
  assert.equal(sha256(Buffer.from('abc')), 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
});

test('malformed digests are refused with STASIS_CORRUPT naming the digest', () => {
  const good = formatDigest(V2, 2).toString();
  const sums = CHUNKED.chunks!.map((c) => ` ${c}\n`).join('');
  const good3 = formatDigest(V3).toString();
  const crcs = CRC_CHUNKED.chunks!.map((c) => ` ${c}\n`).join('');
  const cases: [string, RegExp][] = [
    ['', /not a stasis digest/],
    [good.slice(0, -1), /does not end with a newline/],
    [good.replace('stasis-digest 2', 'stasis-digest 4'), /not a stasis digest/],
    [good3.replace('stasis-digest 3 sha256 crc32', 'stasis-digest 3 sha256'), /not a stasis digest/],
    // CRC-32 chunks: only in version 3, 8 lower-case hex digits each, exactly as many as SHA-256 ones.
    [good3.replace('stasis-digest 3 sha256 crc32', 'stasis-digest 2 sha256'), /line 9 is damaged \(not 'SIZE SHA256 NAME' or 'SIZE \*CHUNK NAME'\)/],
    [good3.replace(crcs, crcs.replace(/^ ([0-9a-f]{8})/, (_m, h: string) => ` ${h}0`)), /line 10 is damaged \(pages-3\.img lists 3 chunks, not ' CRC32' here\)/],
    [good3.replace(crcs, crcs.replace(/^ ([0-9a-f]{8})/, (_m, h: string) => ` ${h.toUpperCase().replace(/[0-9]/g, 'A')}`)), /line 10 is damaged/],
    [good3.replace(crcs, crcs.split('\n').slice(1).join('\n')), /line 12 is damaged \(pages-3\.img lists 3 chunks/],
    [good3.replace('crc32*8192', 'crc32 *8192'), /line 9 is damaged/],
    [good3.replace('crc32*8192', 'CRC32*8192'), /line 9 is damaged/],
    [good3.replace('20480 *8192 pages-2.img', '20480 crc32*8192 pages-2.img'), /line 6 is damaged \(pages-2\.img lists 3 chunks, not ' CRC32' here\)/],
    ['stasis-digest 2 sha256\n', /lists no files/],
    ['stasis-digest 1 sha256\n', /lists no files/],
    [good.replace(' core-4242.img', ' ../core-4242.img'), /line 2 is damaged/],
    [good.replace(' core-4242.img', ' .hidden'), /line 2 is damaged/],
    [good.replace('1682 ', '01682 '), /line 2 is damaged/],
    [good.replace('1682 ', '99999999999999999 '), /line 2 is damaged/],
    [good.replace(/ [0-9a-f]{64} core/, (m) => m.toUpperCase().replace(' CORE', ' core')), /line 2 is damaged/],
    [good.replace('inventory.img', 'core-4242.img'), /out of order or listed twice/],
    [good + `1 ${'0'.repeat(64)} ${DIGEST_FILE}\n`, /is damaged/],
    [good.replace('\n', '\r\n'), /not a stasis digest/],
    // Chunked entries: chunk size a multiple of the page size, exactly ceil(SIZE/CHUNK) chunk lines, only in version 2.
    [good.replace('*8192', '*8000'), /line 5 is damaged/],
    [good.replace('*8192', '*08192'), /line 5 is damaged/],
    [good.replace('*8192', '*0'), /line 5 is damaged/],
    [good.replace(sums, sums.split('\n').slice(1).join('\n')), /line 8 is damaged \(pages-2\.img lists 3 chunks/],
    [good.replace(sums, sums + ` ${'0'.repeat(64)}\n`), /line 9 is damaged/],
    [good.replace(sums, sums.replace(/^ /, '  ')), /line 6 is damaged/],
    [good.replace('20480 *8192', '24577 *8192'), /line 9 is damaged \(pages-2\.img lists 4 chunks/],
    [formatDigest(ENTRIES, 1).toString() + `20480 *8192 pages-2.img\n${sums}`, /line 5 is damaged/],
  ];
  for (const [text, re] of cases) {
    assert.throws(() => parseDigest('D/stasis-digest', Buffer.from(text, 'latin1')), (e: { code: string; message: string }) => {
      assert.equal(e.code, ErrorCodes.CORRUPT, text);
      assert.match(e.message, /^D\/stasis-digest: /);
      assert.match(e.message, re, JSON.stringify(text));
      return true;
    });
  }
});

test('every single-bit flip of a digest (v1, v2 or v3, chunked entries too) is refused or changes what it lists', () => {
  for (const good of [formatDigest(V3), formatDigest(V2, 2), formatDigest(ENTRIES, 1)]) flips(good);
});

function flips(good: Buffer): void {
  const truth = JSON.stringify([...parseDigest('d', good).values()]);
  let refused = 0, changed = 0;
  for (let i = 0; i < good.length; i++) {
    for (let bit = 0; bit < 8; bit++) {
      const b = Buffer.from(good);
      b[i] ^= 1 << bit;
      let listed: string | undefined;
      try { listed = JSON.stringify([...parseDigest('d', b).values()]); } catch { refused++; continue; }
      assert.notEqual(listed, truth, `flip of bit ${bit} of byte ${i} went unnoticed`);
      changed++;
    }
  }
  assert.equal(refused + changed, good.length * 8);
  assert.ok(refused > changed, `${refused} refused, ${changed} changed an entry`);
}

test('a raw file hashed while it is written: pages files per chunk (small ones at close, big ones by the threads), others whole', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stasis-digest-unit-'));
  try {
    const b = new DigestBuilder();
    const want = new Map<string, Buffer>();
    // 100 KiB (hashed at close) and 40 MiB in writes of odd sizes (the threads: chunks handed over as they complete).
    for (const [name, total] of [['pages-1.img', 100 << 10], ['pages-2.img', 40 << 20], ['other.img', 9 << 20]] as const) {
      const p = path.join(dir, name);
      const fd = fs.openSync(p, 'w');
      const raw = b.addRaw(name, p);
      const parts: Buffer[] = [];
      let pos = 0, i = 0;
      while (pos < total) {
        const len = Math.min(total - pos, [4096, 3 << 20, 12345, 9 << 20][i++ % 4]);
        const chunk = crypto.randomBytes(len);
        fs.writeSync(fd, chunk, 0, len, pos);
        parts.push(chunk);
        pos += len;
        raw.advance(len);
      }
      fs.closeSync(fd);
      raw.finish(total);
      want.set(name, Buffer.concat(parts));
    }
    b.addWhole('whole.img', Buffer.from('abc'));
    const got = new Map(b.entries().map((e) => [e.name, e]));
    assert.ok(b.threaded, 'the big pages file went to the hashing threads');
    b.close();
    for (const name of ['pages-1.img', 'pages-2.img']) {
      const data = want.get(name)!;
      assert.deepEqual(got.get(name), { name, size: data.length, chunk: CHUNK_SIZE, chunks: chunkSums(data, CHUNK_SIZE), alg: 'crc32' });
    }
    assert.equal(got.get('pages-2.img')!.chunks!.length, 10);
    assert.deepEqual(got.get('other.img'), { name: 'other.img', size: 9 << 20, sha256: sha256(want.get('other.img')!) });
    assert.equal(got.get('whole.img')!.sha256, 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');

    // The same chunks from data seen in order (a page server's sender), in pieces across chunk boundaries.
    const h = new ChunkedHasher();
    const d2 = want.get('pages-2.img')!;
    for (let o = 0; o < d2.length; o += 3 << 20) h.update(d2.subarray(o, Math.min(d2.length, o + (3 << 20))));
    assert.deepEqual(h.finish('pages-2.img'), got.get('pages-2.img'));

    // A file written by someone we do not see (a child's stdout) is hashed whole at close.
    for (const [name, total] of [['ext-small.img', 5000], ['ext-big.img', 20 << 20], ['pages-7.img', 5000], ['pages-8.img', 20 << 20]] as const) {
      const b4 = new DigestBuilder();
      const p4 = path.join(dir, name);
      const data = crypto.randomBytes(total);
      fs.writeFileSync(p4, data);
      const raw4 = b4.addRaw(name, p4);
      raw4.external();
      raw4.finish(total);
      const entry = name.startsWith('pages-') ? { name, size: total, chunk: CHUNK_SIZE, chunks: chunkSums(data, CHUNK_SIZE), alg: 'crc32' } : { name, size: total, sha256: sha256(data) };
      assert.deepEqual(b4.entries(), [entry]);
      b4.close();
    }

    // A write that did not go through advance() shows as a size mismatch at commit.
    const b2 = new DigestBuilder();
    const p = path.join(dir, 'bypassed.img');
    fs.writeFileSync(p, Buffer.alloc(8192, 1));
    const raw = b2.addRaw('bypassed.img', p);
    raw.advance(4096);
    raw.finish(8192);
    assert.throws(() => b2.entries(), /cannot hash bypassed\.img: 8192 bytes on disk but 4096 written through the images directory/);
    // One never closed cannot be committed.
    const b3 = new DigestBuilder();
    b3.addRaw('open.img', p);
    assert.throws(() => b3.entries(), /open\.img is still open when the checkpoint is committed/);
    b2.close();
    b3.close();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

/** A directory holding `files` and their digest (`version` 1: every file whole; 2: pages files per chunk by SHA-256; 3: by CRC-32). */
function makeCheckpoint(files: Record<string, Buffer>, version: 1 | 2 | 3): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stasis-digest-verify-'));
  const entries: DigestEntry[] = [];
  for (const [name, data] of Object.entries(files)) {
    fs.writeFileSync(path.join(dir, name), data);
    const alg = version === 3 ? 'crc32' : 'sha256';
    entries.push(version > 1 && name.startsWith('pages-') ? { name, size: data.length, chunk: CHUNK_SIZE, chunks: chunkSums(data, CHUNK_SIZE, alg), alg } : { name, size: data.length, sha256: sha256(data) });
  }
  fs.writeFileSync(path.join(dir, DIGEST_FILE), formatDigest(entries, version));
  return dir;
}

function flipByte(file: string, at: number): void {
  const fd = fs.openSync(file, 'r+');
  try {
    const b = Buffer.alloc(1);
    fs.readSync(fd, b, 0, 1, at);
    b[0] ^= 0x10;
    fs.writeSync(fd, b, 0, 1, at);
  } finally { fs.closeSync(fd); }
}

test('verify: v3 and v2 chunks checked on the threads (12 MiB) and on this thread (small); a flipped byte names its chunk; v1 still verifies', () => {
  const big = crypto.randomBytes(12 << 20);
  const small = crypto.randomBytes(3 * 4096);
  for (const version of [3, 2, 1] as const) {
    const dir = makeCheckpoint({ 'inventory.img': Buffer.from('inv'), 'pages-1.img': big, 'pages-2.img': small }, version);
    try {
      assert.deepEqual([...verifyImages(dir).keys()].sort(), ['inventory.img', 'pages-1.img', 'pages-2.img']);
      assert.ok(checkImages(dir).ok);
      flipByte(path.join(dir, 'pages-1.img'), 2 * CHUNK_SIZE + 777);
      const where = path.join(dir, DIGEST_FILE);
      const re = version > 1
        ? new RegExp(`^${path.join(dir, 'pages-1.img')}: contents do not match their ${version === 3 ? 'CRC-32' : 'SHA-256'} in ${where} \\(chunk 2, bytes ${2 * CHUNK_SIZE} to ${3 * CHUNK_SIZE}\\): the checkpoint is damaged`)
        : new RegExp(`^${path.join(dir, 'pages-1.img')}: contents do not match their SHA-256 in ${where}: the checkpoint is damaged`);
      assert.throws(() => verifyImages(dir), (e: { code: string; message: string }) => e.code === ErrorCodes.CORRUPT && re.test(e.message));
      const report = checkImages(dir);
      assert.deepEqual(report.files.filter((f) => !f.ok).map((f) => f.name), ['pages-1.img']);
      flipByte(path.join(dir, 'pages-1.img'), 2 * CHUNK_SIZE + 777);
      flipByte(path.join(dir, 'pages-2.img'), 5000);
      assert.throws(() => verifyImages(dir), (e: { code: string; message: string }) => e.code === ErrorCodes.CORRUPT && e.message.includes(path.join(dir, 'pages-2.img')));
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }
});

test('check-images: a file shorter or longer than the digest lists is reported as that (naming the digest), chunked files too', () => {
  const dir = makeCheckpoint({ 'inventory.img': Buffer.from('inv'), 'pages-1.img': crypto.randomBytes(5 * 4096), 'core-1.img': Buffer.from('core') }, 3);
  try {
    const where = path.join(dir, DIGEST_FILE);
    fs.truncateSync(path.join(dir, 'pages-1.img'), 4 * 4096);
    fs.appendFileSync(path.join(dir, 'core-1.img'), 'x');
    const bad = checkImages(dir).files.filter((f) => !f.ok).map((f) => [f.name, f.code, f.problem]);
    assert.deepEqual(bad, [
      ['core-1.img', ErrorCodes.CORRUPT, `${path.join(dir, 'core-1.img')}: 5 bytes, but ${where} lists 4`],
      ['pages-1.img', ErrorCodes.CORRUPT, `${path.join(dir, 'pages-1.img')}: ${4 * 4096} bytes, but ${where} lists ${5 * 4096}`],
    ]);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('deferred chunks (lazy restore): other files checked now, each chunk when first read; a bad chunk refused when read, never before', () => {
  const pages = crypto.randomBytes(3 * CHUNK_SIZE + 8192);
  const dir = makeCheckpoint({ 'inventory.img': Buffer.from('inv'), 'pages-1.img': pages }, 3);
  try {
    flipByte(path.join(dir, 'pages-1.img'), 2 * CHUNK_SIZE + 5);
    const listing = verifyImages(dir, false, true);
    const d = listing.deferred!;
    assert.ok(d && !d.complete);
    const images = new ImageReader(dir, undefined, listing);
    const fd = images.open('pages-1.img');
    try {
      images.verifyRange('pages-1.img', fd, 0, 4096); // chunk 0
      images.verifyRange('pages-1.img', fd, CHUNK_SIZE - 4096, 8192); // chunks 0 and 1
      images.verifyRange('pages-1.img', fd, 3 * CHUNK_SIZE, 8192); // the short last chunk
      assert.throws(() => images.verifyRange('pages-1.img', fd, 2 * CHUNK_SIZE + 4096, 4096), (e: { code: string; message: string }) =>
        e.code === ErrorCodes.CORRUPT && e.message.includes(`(chunk 2, bytes ${2 * CHUNK_SIZE} to ${3 * CHUNK_SIZE})`));
      // Read whole (a memfd's or SysV shm's pages): every chunk not checked yet, the bad one refused.
      assert.throws(() => images.raw('pages-1.img'), /chunk 2/);
    } finally { fs.closeSync(fd); }
    // Other files are still checked up front.
    fs.writeFileSync(path.join(dir, 'inventory.img'), 'inw');
    assert.throws(() => verifyImages(dir, false, true), /inventory\.img: contents do not match/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
