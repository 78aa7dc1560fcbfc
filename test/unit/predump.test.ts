// Pure parts of pre-dumps and incremental dumps: the tracking record's format,
// which pages of a VMA are taken from the parent, and the ioctl numbers and
// struct sizes of userfaultfd and PAGEMAP_SCAN (the kernel's values).
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { formatTrack, parseTrack } from '../../src/resources/memory/track';
import { fromParent } from '../../src/resources/memory/parent';
import { abi } from '../../src/sys';
import { ErrorCodes } from '../../src/errors';
import { encodeImage, parts } from '../../src/images/image';
import { encodePagemap } from '../../src/images/pagemap';

test('stasis-track round-trips (version 2: with the fd), sorted by pid, reads version 1, and refuses damage', () => {
  const recs = [
    { vpid: 30, pid: 130, start: 123456789n, ino: 42, fd: 1000 },
    { vpid: 7, pid: 7, start: 5n, ino: 9, fd: 3 },
  ];
  const buf = formatTrack(recs);
  assert.equal(buf.toString(), 'stasis-track 2\n7 7 5 9 3\n30 130 123456789 42 1000\n');
  assert.deepEqual([...parseTrack('t', buf).values()], [recs[1], recs[0]]);
  // Version 1 (no fd): read, the fd unknown.
  assert.deepEqual([...parseTrack('t', Buffer.from('stasis-track 1\n7 7 5 9\n')).values()], [{ vpid: 7, pid: 7, start: 5n, ino: 9 }]);
  for (const bad of ['stasis-track 3\n', 'stasis-track 2\n7 7 5 9\n', 'stasis-track 1\n7 7 5 9 3\n', 'stasis-track 1\n7 7 5\n', 'stasis-track 2\n7 7 5 9 3', 'stasis-track 2\n7 x 5 9 3\n']) {
    assert.throws(() => parseTrack('t', Buffer.from(bad)), (e: { code?: string }) => e.code === ErrorCodes.BAD_IMAGE, JSON.stringify(bad));
  }
});

test('fromParent: the parent\'s pages inside the VMA, less the written ones', () => {
  const have: [number, number][] = [[0, 10], [20, 30], [40, 50]];
  assert.deepEqual(fromParent(have, 5, 45, []), [[5, 10], [20, 30], [40, 45]]);
  assert.deepEqual(fromParent(have, 25, 26, []), [[25, 26]]);
  assert.deepEqual(fromParent(have, 10, 20, []), []);
  const P = BigInt(abi.PAGE_SIZE);
  // Written pages 22-23 and 28-41 (byte ranges), 3 (outside the VMA).
  assert.deepEqual(fromParent(have, 5, 45, [[3n * P, 4n * P], [22n * P, 24n * P], [28n * P, 41n * P]]), [[5, 10], [20, 22], [24, 28], [41, 45]]);
});

test('userfaultfd and PAGEMAP_SCAN ABI: the kernel\'s ioctl numbers and struct sizes', () => {
  assert.equal(abi.UFFDIO_IOC.API, 0xc018aa3f);
  assert.equal(abi.UFFDIO_IOC.REGISTER, 0xc020aa00);
  assert.equal(abi.UFFDIO_IOC.UNREGISTER, 0x8010aa01);
  assert.equal(abi.UFFDIO_IOC.WRITEPROTECT, 0xc018aa06);
  assert.equal(abi.PM_SCAN_ARG.size, 96);
  assert.equal(abi.PAGE_REGION.size, 24);
  assert.equal(abi.PAGEMAP_SCAN, 0xc0606610);
});

test('encodePagemap writes the bytes the generic encoder writes', () => {
  const entries = [
    { vaddr: 0n, nr_pages: 1, flags: 4 }, { vaddr: 0x7ffff7dd1000n, nr_pages: 300000, flags: 1 },
    { vaddr: 0x1fffffffffffff000n >> 4n, nr_pages: 0x7fffffff }, { vaddr: 4096n * 127n, nr_pages: 128, flags: 5 },
  ];
  const want = encodeImage('PAGEMAP', [{ msg: 'pagemap_head', entry: { pages_id: 7 } }, ...parts('pagemap_entry', entries)]);
  assert.deepEqual(encodePagemap(7, entries), want);
  assert.deepEqual(encodePagemap(3, []), encodeImage('PAGEMAP', [{ msg: 'pagemap_head', entry: { pages_id: 3 } }]));
  // Fields the fast path leaves to the generic encoder.
  const odd = [{ vaddr: 1n << 60n, nr_pages: 1, in_parent: true }];
  assert.deepEqual(encodePagemap(1, odd), encodeImage('PAGEMAP', [{ msg: 'pagemap_head', entry: { pages_id: 1 } }, ...parts('pagemap_entry', odd)]));
});
