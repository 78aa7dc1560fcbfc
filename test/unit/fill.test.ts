// Which VMAs a restore fills by UFFDIO_COPY (never zeroed first) and which it
// populates then writes (where transparent huge pages may apply): fill.ts.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { parseThpMode, mayUseThp } from '../../src/resources/memory/fill';
import { abi } from '../../src/sys';

const MiB = 1n << 20n;
const vma = (start: bigint, end: bigint, advice: number[] = []) =>
  ({ start, end, pgoff: 0n, shmid: 0n, prot: 3, flags: 0x22, status: 0, fd: -1n, madv: advice.reduce((m, a) => m | (1n << BigInt(a)), 0n) });

test('the system THP mode is the bracketed word', () => {
  assert.equal(parseThpMode('always [madvise] never\n'), 'madvise');
  assert.equal(parseThpMode('[always] madvise never\n'), 'always');
  assert.equal(parseThpMode('always madvise [never]\n'), 'never');
});

test('THP may apply: by mode, advice, the process\'s THP switch and room for an aligned huge page', () => {
  const big = vma(0x7f0000000000n, 0x7f0000000000n + 64n * MiB);
  assert.equal(mayUseThp(big, 'always', false), true);
  assert.equal(mayUseThp(big, 'never', false), false);
  assert.equal(mayUseThp(big, 'madvise', false), false);
  assert.equal(mayUseThp(vma(big.start, big.end, [abi.MADV.HUGEPAGE]), 'madvise', false), true);
  assert.equal(mayUseThp(vma(big.start, big.end, [abi.MADV.NOHUGEPAGE]), 'always', false), false);
  assert.equal(mayUseThp(big, 'always', true), false, 'PR_SET_THP_DISABLE');
  // From 1 MiB past an aligned address: 2.5 MiB hold no whole aligned 2 MiB, 3 MiB hold one.
  const off = 0x7f0000000000n + MiB;
  assert.equal(mayUseThp(vma(off, off + 2n * MiB + MiB / 2n), 'always', false), false);
  assert.equal(mayUseThp(vma(off, off + 3n * MiB), 'always', false), true);
});
