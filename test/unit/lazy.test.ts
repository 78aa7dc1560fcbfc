// Lazy restore's pure parts: the kernel ABI it uses, which pages are lazy,
// and the range bookkeeping of the server (cut, with file offsets kept).
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { abi } from '../../src/sys';
import { cutRanges } from '../../src/restore/lazy-server';
import { splitSources, isLazyVma } from '../../src/resources/memory/lazy';
import type { LoadedMm, PageSource } from '../../src/resources/memory/load';
import { VMA } from '../../src/images/criu';

const P = 4096n;

test('userfaultfd ioctls and message layout are the kernel\'s', () => {
  assert.equal(abi.UFFDIO_IOC.COPY, 0xc028aa03);
  assert.equal(abi.UFFDIO_IOC.ZEROPAGE, 0xc020aa04);
  assert.equal(abi.UFFDIO_IOC.WAKE, 0x8010aa02);
  assert.equal(abi.UFFD_MSG.size, 32);
  assert.equal(abi.UFFD_MSG.offsets.a0, 8);
  assert.equal(abi.UFFDIO_COPY_ARG.offsets.copy, 32);
  assert.equal(abi.UFFDIO_ZEROPAGE_ARG.offsets.zeropage, 24);
  assert.equal(abi.SIGINFO_CHLD.offsets.pid, 16);
});

test('cutRanges removes a range exactly, keeping file offsets of what is left and of what was cut', () => {
  const xs = [{ start: 0n, end: 10n * P, off: 0, fd: 3 }, { start: 20n * P, end: 30n * P, off: 40960, fd: 3 }];
  const cut: typeof xs = [];
  cutRanges(xs, 5n * P, 25n * P, cut);
  assert.deepEqual(xs, [{ start: 0n, end: 5n * P, off: 0, fd: 3 }, { start: 25n * P, end: 30n * P, off: 40960 + 5 * 4096, fd: 3 }]);
  assert.deepEqual(cut, [{ start: 5n * P, end: 10n * P, off: 5 * 4096, fd: 3 }, { start: 20n * P, end: 25n * P, off: 40960, fd: 3 }]);
  cutRanges(xs, 2n * P, 3n * P);
  assert.deepEqual(xs.map((x) => [x.start / P, x.end / P, x.off / 4096]), [[0n, 2n, 0], [3n, 5n, 3], [25n, 30n, 15]]);
  cutRanges(xs, 100n * P, 200n * P);
  assert.equal(xs.length, 3, 'a range past everything cuts nothing');
});

test('only private anonymous, unlocked VMAs are lazy; sources are split at their edges', () => {
  const anon = { status: VMA.AREA_REGULAR | VMA.ANON_PRIVATE, flags: abi.MAP.PRIVATE | abi.MAP.ANONYMOUS };
  const vmas = [
    { ...anon, start: 0x10000n, end: 0x14000n },
    { status: VMA.AREA_REGULAR | VMA.FILE_PRIVATE, flags: abi.MAP.PRIVATE, start: 0x14000n, end: 0x16000n },
    { ...anon, flags: anon.flags | abi.MAP.LOCKED, start: 0x16000n, end: 0x18000n },
  ];
  assert.deepEqual(vmas.map((v) => isLazyVma(v as never)), [true, false, false]);
  const src = { vaddr: 0x12000n, nrPages: 6, fileOff: 8192, pagesFile: 'pages-1.img' } as unknown as PageSource;
  const m = { mm: { vmas }, sources: [src] } as unknown as LoadedMm;
  const { eager, lazy, ranges } = splitSources(m);
  assert.deepEqual(ranges, [[0x10000n, 0x14000n]]);
  assert.deepEqual(lazy.map((s) => [s.vaddr, s.nrPages, s.fileOff]), [[0x12000n, 2, 8192]]);
  assert.deepEqual(eager.map((s) => [s.vaddr, s.nrPages, s.fileOff]), [[0x14000n, 4, 8192 + 2 * 4096]]);
});
