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
import { formatDigest, parseDigest, sha256, DigestBuilder, DIGEST_FILE, type DigestEntry } from '../../src/images/digest';
import { ErrorCodes } from '../../src/errors';

const ENTRIES: DigestEntry[] = [
  { name: 'pages-1.img', size: 102400, sha256: sha256(Buffer.alloc(102400, 1)) },
  { name: 'core-4242.img', size: 1682, sha256: sha256(Buffer.from('core')) },
  { name: 'inventory.img', size: 0, sha256: sha256(Buffer.alloc(0)) },
];

test('format: header, sorted lines SIZE SHA256 NAME, final newline; parse gives the entries back', () => {
  const buf = formatDigest(ENTRIES);
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
  const good = formatDigest(ENTRIES).toString();
  const cases: [string, RegExp][] = [
    ['', /not a stasis digest/],
    [good.slice(0, -1), /does not end with a newline/],
    [good.replace('stasis-digest 1', 'stasis-digest 2'), /not a stasis digest/],
    ['stasis-digest 1 sha256\n', /lists no files/],
    [good.replace(' core-4242.img', ' ../core-4242.img'), /line 2 is damaged/],
    [good.replace(' core-4242.img', ' .hidden'), /line 2 is damaged/],
    [good.replace('1682 ', '01682 '), /line 2 is damaged/],
    [good.replace('1682 ', '99999999999999999 '), /line 2 is damaged/],
    [good.replace(/ [0-9a-f]{64} core/, (m) => m.toUpperCase().replace(' CORE', ' core')), /line 2 is damaged/],
    [good.replace('inventory.img', 'core-4242.img'), /out of order or listed twice/],
    [good + `1 ${'0'.repeat(64)} ${DIGEST_FILE}\n`, /is damaged/],
    [good.replace('\n', '\r\n'), /not a stasis digest/],
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

test('every single-bit flip of a digest is refused or changes what it lists', () => {
  const good = formatDigest(ENTRIES);
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
});

test('a raw file hashed while it is written: small ones at close, big ones by the hashing thread', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stasis-digest-unit-'));
  try {
    const b = new DigestBuilder();
    const want = new Map<string, string>();
    // 100 KiB (hashed at close) and 40 MiB in writes of odd sizes (the thread: several progress posts).
    for (const [name, total] of [['small.img', 100 << 10], ['big.img', 40 << 20]] as const) {
      const p = path.join(dir, name);
      const fd = fs.openSync(p, 'w');
      const raw = b.addRaw(name, p);
      const h = crypto.createHash('sha256');
      let pos = 0, i = 0;
      while (pos < total) {
        const len = Math.min(total - pos, [4096, 3 << 20, 12345, 9 << 20][i++ % 4]);
        const chunk = crypto.randomBytes(len);
        fs.writeSync(fd, chunk, 0, len, pos);
        h.update(chunk);
        pos += len;
        raw.advance(len);
      }
      fs.closeSync(fd);
      raw.finish(total);
      want.set(name, h.digest('hex'));
    }
    b.addWhole('whole.img', Buffer.from('abc'));
    const got = new Map(b.entries().map((e) => [e.name, e]));
    assert.ok(b.worker, 'the big file went to the hashing thread');
    b.close();
    assert.deepEqual(got.get('small.img'), { name: 'small.img', size: 100 << 10, sha256: want.get('small.img') });
    assert.deepEqual(got.get('big.img'), { name: 'big.img', size: 40 << 20, sha256: want.get('big.img') });
    assert.equal(got.get('whole.img')!.sha256, 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');

    // A file written by someone we do not see (a child's stdout) is hashed whole at close.
    for (const [name, total] of [['ext-small.img', 5000], ['ext-big.img', 20 << 20]] as const) {
      const b4 = new DigestBuilder();
      const p4 = path.join(dir, name);
      const data = crypto.randomBytes(total);
      fs.writeFileSync(p4, data);
      const raw4 = b4.addRaw(name, p4);
      raw4.external();
      raw4.finish(total);
      assert.deepEqual(b4.entries(), [{ name, size: total, sha256: sha256(data) }]);
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
