// Guard pages (madvise MADV_GUARD_INSTALL, Linux 6.13): pages of a VMA that
// fault on any access, without a VMA of their own. The kernel shows them by
// PAGEMAP_SCAN's PAGE_IS_GUARD (and pagemap bit 58) from 6.15. Dumped as
// criu does: extra vma_entry items with status VMA_AREA_GUARD after the real
// VMAs, their pages never read (a read faults); restored by installing them
// again once the VMAs and their pages are in place. A kernel that cannot
// show guard pages makes their read fail: the dump is refused, never wrong.
import { abi, pagemapScanRegions } from '../../sys';
import { VMA } from '../../images/criu';
import { SyscallError } from '../../errors';
import type { Msg } from '../../images/schema';
import type { ClassifiedVma } from './classify';

const { PAGE_IS, ERRNO, MADV } = abi;
const PAGE = BigInt(abi.PAGE_SIZE);

export type Range = [bigint, bigint];

let scanShowsGuards: boolean | undefined;

/** Guard page ranges of the process's VMAs (pagemap open as `pmFd`), each within one VMA, in address order. */
export function guardRanges(pmFd: number, vmas: ClassifiedVma[]): Range[] {
  if (scanShowsGuards === false) return [];
  const user = vmas.filter((cv) => !(cv.status & VMA.AREA_VSYSCALL));
  if (!user.length) return [];
  let regions;
  try {
    regions = pagemapScanRegions(pmFd, user[0].vma.start, user[user.length - 1].vma.end, 0, { mask: PAGE_IS.GUARD, returned: PAGE_IS.GUARD });
  } catch (e) {
    // A kernel without PAGE_IS_GUARD (before 6.15) refuses the category.
    if (e instanceof SyscallError && e.errno === ERRNO.EINVAL) { scanShowsGuards = false; return []; }
    throw e;
  }
  scanShowsGuards = true;
  const out: Range[] = [];
  let vi = 0;
  for (const r of regions) {
    // Cut at VMA boundaries (a region may run on into the next VMA).
    for (let s = r.start; s < r.end;) {
      while (vi < user.length && user[vi].vma.end <= s) vi++;
      const v = user[vi];
      if (!v) break;
      const e = r.end < v.vma.end ? r.end : v.vma.end;
      if (s >= v.vma.start) out.push([s, e]);
      s = e > s ? e : v.vma.end;
    }
  }
  return out;
}

/** The vma_entry items of guard ranges (criu's shape: range and status only). */
export function guardEntries(guards: Range[]): Msg<'vma_entry'>[] {
  return guards.map(([start, end]) => ({ start, end, pgoff: 0n, shmid: 0n, prot: 0, flags: 0, status: VMA.AREA_GUARD, fd: -1n }));
}

/** [addr, addr + pages) without the guard ranges: the runs left, as (address, pages). */
export function outsideGuards(guards: Range[], addr: bigint, pages: number): [bigint, number][] {
  const end = addr + BigInt(pages) * PAGE;
  const out: [bigint, number][] = [];
  let at = addr;
  for (const [gs, ge] of guards) {
    if (ge <= at) continue;
    if (gs >= end) break;
    if (gs > at) out.push([at, Number((gs - at) / PAGE)]);
    at = ge;
  }
  if (at < end) out.push([at, Number((end - at) / PAGE)]);
  return out;
}

/** Split the VMAs of an image: the mappings, and the guard ranges listed among them (checked: aligned, inside mappings). */
export function splitGuards(vmas: Msg<'vma_entry'>[], bad: (msg: string) => Error): { vmas: Msg<'vma_entry'>[]; guards: Range[] } {
  const maps = vmas.filter((v) => !(v.status & VMA.AREA_GUARD));
  const guards: Range[] = vmas.filter((v) => v.status & VMA.AREA_GUARD).map((v) => [v.start, v.end] as Range).sort((a, b) => (a[0] < b[0] ? -1 : 1));
  let prevEnd = 0n;
  for (const [s, e] of guards) {
    const range = `guard pages ${s.toString(16)}-${e.toString(16)}`;
    if (s % PAGE !== 0n || e % PAGE !== 0n || e <= s) throw bad(`${range} are not page-aligned, or empty`);
    if (s < prevEnd) throw bad(`${range} overlap the previous ones`);
    prevEnd = e;
    // Inside mappings (adjacent ones may share a range).
    let covered = s;
    for (const v of maps) if (v.start <= covered && covered < v.end) covered = v.end;
    if (covered < e) throw bad(`${range} lie outside every VMA`);
  }
  return { vmas: maps, guards };
}

/** The madvise calls that install guard ranges again. */
export function guardCalls(guards: Range[]): ['madvise', bigint, bigint, number][] {
  return guards.map(([s, e]) => ['madvise', s, e - s, MADV.GUARD_INSTALL]);
}
