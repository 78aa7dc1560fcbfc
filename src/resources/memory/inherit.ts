// Private memory shared copy-on-write across fork. A page a parent wrote
// before fork and neither side wrote since is one physical page in both; a
// child made with its own copy of every page would use more memory, and
// programs can see the difference (/proc/PID/pagemap). As CRIU does, a
// parent maps and fills, before it forks, each private VMA that one of its
// children has too (same range, protection, flags and file); the child
// inherits it, drops those of its parent it has not, and keeps the pages it
// shares: only those that differ from its own image are written, and those
// it has no page for (zero, or the file's) are dropped. Such VMAs are "held":
// the address-space and pages phases leave them alone.
import * as fs from 'node:fs';
import { abi } from '../../sys';
import type { Msg } from '../../images/schema';
import { VMA } from '../../images/criu';
import { StasisError, ErrorCodes } from '../../errors';
import type { RestoreCtx, TaskRestore } from '../../unit/restore-ctx';
import type { ProcessImage } from '../../unit/checkpoint';
import type { LoadedMm, PageSource } from './load';
import { mapVmas, restorePages, type Reprotect } from './restore';

const { PAGE_SIZE, MADV } = abi;
const PAGE = BigInt(PAGE_SIZE);
type Vma = Msg<'vma_entry'>;

const byRestore = new WeakMap<RestoreCtx, Map<number, Set<Vma>>>();

function heldOf(ctx: RestoreCtx, pid: number): Set<Vma> {
  let all = byRestore.get(ctx);
  if (!all) byRestore.set(ctx, (all = new Map()));
  let s = all.get(pid);
  if (!s) all.set(pid, (s = new Set()));
  return s;
}

/** VMAs of `pid` in place (with their pages) since the tree was made. */
export function heldVmas(ctx: RestoreCtx, pid: number): ReadonlySet<Vma> {
  return byRestore.get(ctx)?.get(pid) ?? new Set();
}

const NOT_INHERITED = VMA.AREA_VDSO | VMA.AREA_VVAR | VMA.AREA_VSYSCALL | VMA.ANON_SHARED | VMA.FILE_SHARED | VMA.AREA_MEMFD
  | VMA.AREA_SYSVIPC | VMA.AREA_SOCKET | VMA.AREA_AIORING;

function inheritable(v: Vma): boolean {
  return !(v.status & NOT_INHERITED) && (v.status & (VMA.ANON_PRIVATE | VMA.FILE_PRIVATE)) !== 0;
}

function same(a: Vma, b: Vma): boolean {
  return a.start === b.start && a.end === b.end && a.prot === b.prot && a.flags === b.flags && a.status === b.status
    && a.pgoff === b.pgoff && (!(a.status & VMA.FILE_PRIVATE) || a.shmid === b.shmid);
}

function byStart(m: LoadedMm): Map<bigint, Vma> {
  return new Map((m.mm.vmas ?? []).filter(inheritable).map((v) => [v.start, v]));
}

/** The parts of `sources` inside (or, `inside` false, outside) the sorted ranges of `vmas`. */
export function clipSources(sources: PageSource[], vmas: Iterable<Vma>, inside = true): PageSource[] {
  const ranges = [...vmas].sort((a, b) => (a.start < b.start ? -1 : 1));
  if (ranges.length === 0) return inside ? [] : sources;
  const out: PageSource[] = [];
  const piece = (s: PageSource, from: bigint, to: bigint) => {
    if (to > from) out.push({ ...s, vaddr: from, nrPages: Number((to - from) / PAGE), fileOff: s.fileOff + Number(from - s.vaddr) });
  };
  for (const s of sources) {
    const end = s.vaddr + BigInt(s.nrPages) * PAGE;
    let at = s.vaddr;
    for (const r of ranges) {
      if (r.end <= at || r.start >= end) continue;
      const lo = r.start > at ? r.start : at;
      const hi = r.end < end ? r.end : end;
      if (inside) piece(s, lo, hi); else piece(s, at, lo);
      at = hi;
    }
    if (!inside) piece(s, at, end);
  }
  return out;
}

/**
 * In `tr`, before it forks `children`: map and fill each private VMA of its
 * that a child has too (and that it did not inherit itself).
 */
export function premapForChildren(ctx: RestoreCtx, tr: TaskRestore, children: ProcessImage[], all: Map<number, LoadedMm>, reprotect: Reprotect): void {
  if (ctx.opts.lazyPages || children.length === 0) return;
  const m = all.get(tr.img.pid)!;
  const held = heldOf(ctx, tr.img.pid);
  const theirs = children.map((c) => byStart(all.get(c.pid)!));
  const fresh = (m.mm.vmas ?? []).filter((v) => inheritable(v) && !held.has(v) && theirs.some((ix) => {
    const c = ix.get(v.start);
    return c !== undefined && same(c, v);
  }));
  if (fresh.length === 0) return;
  mapVmas(ctx, tr, m, fresh, reprotect, all);
  restorePages(ctx, tr, m, clipSources(m.sources, fresh));
  for (const v of fresh) held.add(v);
}

/**
 * In a child just forked from `parent`: unmap what it inherited but does not
 * have, keep the rest as its own and make its pages the child's.
 */
export function adoptInherited(ctx: RestoreCtx, parent: TaskRestore, child: TaskRestore, all: Map<number, LoadedMm>, reprotect: Reprotect): void {
  const theirs = heldVmas(ctx, parent.img.pid);
  if (theirs.size === 0) return;
  const mine = byStart(all.get(child.img.pid)!);
  const kept: Vma[] = [];
  const drop: Vma[] = [];
  for (const v of theirs) {
    const c = mine.get(v.start);
    if (c && same(c, v)) kept.push(c); else drop.push(v);
  }
  child.task.callAll(drop.map((v) => ['munmap', v.start, v.end - v.start]));
  const held = heldOf(ctx, child.img.pid);
  // Mapped writable to be filled in the parent, so in the child too.
  const filling = new Set((reprotect.get(parent.img.pid) ?? []).map((r) => r.start));
  let re = reprotect.get(child.img.pid);
  if (!re) reprotect.set(child.img.pid, (re = []));
  for (const v of kept) {
    held.add(v);
    if (filling.has(v.start)) re.push({ start: v.start, len: v.end - v.start, prot: v.prot });
  }
  fixPages(child, all.get(child.img.pid)!, kept);
}

/** The child's pages of its inherited VMAs: written where they differ, dropped where it has none. */
function fixPages(tr: TaskRestore, m: LoadedMm, kept: Vma[]): void {
  if (kept.length === 0) return;
  const sources = clipSources(m.sources, kept);
  const memFd = fs.openSync(`/proc/${tr.task.pid}/mem`, 'r+');
  const img = Buffer.alloc(PAGE_SIZE);
  const cur = Buffer.alloc(PAGE_SIZE);
  try {
    for (const s of sources) {
      const inFd = s.images.open(s.pagesFile);
      try {
        for (let i = 0; i < s.nrPages; i++) {
          const at = s.vaddr + BigInt(i) * PAGE;
          if (fs.readSync(inFd, img, 0, PAGE_SIZE, s.fileOff + i * PAGE_SIZE) !== PAGE_SIZE) throw new StasisError(ErrorCodes.BAD_IMAGE, `${s.images.path(s.pagesFile)}: short read`);
          if (fs.readSync(memFd, cur, 0, PAGE_SIZE, Number(at)) === PAGE_SIZE && cur.equals(img)) continue;
          if (fs.writeSync(memFd, img, 0, PAGE_SIZE, Number(at)) !== PAGE_SIZE) throw new StasisError(ErrorCodes.RESTORE_FAILED, `short write of pages at ${at.toString(16)}`);
        }
      } finally {
        fs.closeSync(inFd);
      }
    }
  } finally {
    fs.closeSync(memFd);
  }
  tr.task.callAll(gaps(kept, sources).map(([a, len]) => ['madvise', a, len, MADV.DONTNEED]));
}

/** Ranges of the VMAs that no source covers. */
function gaps(vmas: Vma[], sources: PageSource[]): [bigint, bigint][] {
  const out: [bigint, bigint][] = [];
  const sorted = [...sources].sort((a, b) => (a.vaddr < b.vaddr ? -1 : 1));
  for (const v of vmas) {
    let at = v.start;
    for (const s of sorted) {
      const end = s.vaddr + BigInt(s.nrPages) * PAGE;
      if (end <= at || s.vaddr >= v.end) continue;
      if (s.vaddr > at) out.push([at, s.vaddr - at]);
      at = end < v.end ? end : v.end;
    }
    if (at < v.end) out.push([at, v.end - at]);
  }
  return out;
}
