// A big raw image written behind the copy (images/write-behind.ts through
// RawImageOut.writeSpans): past WRITE_BEHIND_MIN the spans go to the writing
// thread while the caller fills its other shared buffer; the digest's sums of
// those bytes are fed from memory from a chunk boundary on (the bytes before
// it in place, the span across it split). The file and its digest entry must
// be exactly what writing everything in place gives; a write that fails is
// the caller's error at its next wait, and close() never leaves a write going.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as crypto from 'node:crypto';
import * as zlib from 'node:zlib';
import { RawImageOut } from '../../src/images/dir';
import { DigestBuilder, CHUNK_SIZE } from '../../src/images/digest';
import { WRITE_BEHIND_MIN } from '../../src/images/write-behind';
import { sys } from '../../src/sys';

function crcChunks(data: Buffer): string[] {
  const out: string[] = [];
  for (let o = 0; o < data.length; o += CHUNK_SIZE) out.push(zlib.crc32(data.subarray(o, Math.min(data.length, o + CHUNK_SIZE))).toString(16).padStart(8, '0'));
  return out;
}

test('spans written behind: the file and its CRC-32 chunks are what in-place writes give, across the switch and odd span sizes', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stasis-wb-'));
  try {
    const file = path.join(dir, 'pages-1.img');
    const b = new DigestBuilder();
    const out = new RawImageOut(fs.openSync(file, 'w'), file, b.addRaw('pages-1.img', file));
    const bufs = [0, 1].map(() => Buffer.from(new SharedArrayBuffer(16 << 20)));
    const jobs = [0, 0];
    const want: Buffer[] = [];
    let cur = 0, behind = 0;
    // ~3x the threshold, in chunks of spans whose sizes never line up with 4 MiB.
    for (let written = 0, k = 0; written < 3 * WRITE_BEHIND_MIN; k++) {
      if (jobs[cur]) out.settle(jobs[cur]);
      const buf = bufs[cur];
      crypto.randomFillSync(buf);
      const spans: number[] = [];
      for (let off = 4096 * (k % 3), n = 0; n < 5; n++) {
        const len = 4096 * (97 + ((k * 7 + n * 13) % 311));
        if (off + len > buf.length) break;
        spans.push(off, len);
        want.push(Buffer.from(buf.subarray(off, off + len)));
        written += len;
        off += len + 4096 * (n % 2);
      }
      jobs[cur] = out.writeSpans(buf, spans);
      if (jobs[cur]) { behind++; cur ^= 1; }
    }
    out.settle();
    out.close();
    assert.ok(behind >= 3, `${behind} jobs went behind`);
    const data = Buffer.concat(want);
    assert.ok(fs.readFileSync(file).equals(data), 'the file holds every span, in order');
    const [e] = b.entries();
    b.close();
    assert.deepEqual(e, { name: 'pages-1.img', size: data.length, chunk: CHUNK_SIZE, chunks: crcChunks(data), alg: 'crc32' });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a write behind that fails is the caller\'s error at its next wait; close waits for every job', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stasis-wb-'));
  try {
    const file = path.join(dir, 'pages-3.img');
    const b = new DigestBuilder();
    const fd = fs.openSync(file, 'w');
    const out = new RawImageOut(fd, file, b.addRaw('pages-3.img', file));
    const big = Buffer.alloc(16 << 20, 1);
    for (let n = 0; n < WRITE_BEHIND_MIN; n += big.length) assert.equal(out.writeSpans(big, [0, big.length]), 0, 'below the threshold (and not shared): in place');
    const buf = Buffer.from(new SharedArrayBuffer(16 << 20));
    const job = out.writeSpans(buf, [0, 1 << 20]);
    assert.ok(job > 0, 'shared, past the threshold: behind');
    out.settle(job);
    assert.equal(fs.statSync(file).size, WRITE_BEHIND_MIN + (1 << 20));
    // The fd now names a read-only open file: the next write behind fails there (EBADF).
    const ro = fs.openSync(file, 'r');
    sys('dup3', ro, fd, 0);
    fs.closeSync(ro);
    const bad = out.writeSpans(buf, [0, 1 << 20]);
    assert.ok(bad > 0);
    assert.throws(() => out.settle(bad), /cannot write .*pages-3\.img: EBADF/);
    out.close();
    assert.throws(() => b.entries(), /cannot hash pages-3\.img: /);
    b.close();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
