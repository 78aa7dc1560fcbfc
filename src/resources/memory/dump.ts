// Dump of an address space: mm-PID.img (mm fields, auxv, VMAs),
// pagemap-PID.img and pages-N.img. All-zero pages of anonymous mappings are
// left out: a fresh anonymous mapping reads as zero anyway.
import * as fs from 'node:fs';
import { abi, processVmReadvMany, type PageRegion } from '../../sys';
import { readMaps, readAuxv, readPagemap, residentPages } from '../../proc/proc';
import { parts, type Msg } from '../../images/image';
import { PE } from '../../images/criu';
import { encodePagemap } from '../../images/pagemap';
import { StasisError, ErrorCodes } from '../../errors';
import type { DumpCtx, ProcessDump, RawImage } from '../../unit/dump-ctx';
import { regFileEntry, mappedGhostEntry } from '../regfile';
import { dumpMemfdInode, memfdFileId } from '../memfd';
import { aioRings } from './aio';
import { classify, wanted, parseVmFlags, madvOf, mapFlagsOf, type ClassifiedVma } from './classify';
import type { PageRanges, ParentImages } from './parent';
import type { ProcTracking } from './track';
import { pagePlan } from './incremental';
import type { RemotePages } from '../../pageserver/client';
import { progress } from '../../progress';
import { isLazyVma } from './lazy';
import { guardRanges, guardEntries, outsideGuards, type Range } from './guards';

const { PAGE_SIZE, PROT, O, PAGE_IS, UIO_MAXIOV } = abi;

/** What the parasite tells of each process (brk is not in /proc), and what it found of write tracking. */
export interface MmFacts { brk: bigint; dumpable: number; thpDisabled: boolean; track?: ProcTracking }

export const CHUNK_PAGES = 4096; // 16 MiB of data, 32 KiB of pagemap per chunk
const ZERO_PAGE = Buffer.alloc(PAGE_SIZE);

// Reused across processes and dumps: a 16 MiB buffer per call costs a
// zero-fill and garbage collection while the task is frozen.
let chunkBufs: { pmBuf: Buffer; data: Buffer } | undefined;
export function chunkBuffers(): { pmBuf: Buffer; data: Buffer } {
  return (chunkBufs ??= { pmBuf: Buffer.allocUnsafe(CHUNK_PAGES * 8), data: Buffer.allocUnsafe(CHUNK_PAGES * PAGE_SIZE) });
}

/**
 * The copy's two chunk buffers, over SharedArrayBuffers: one is read into
 * while the other is written behind (images/write-behind.ts). Untouched
 * pages of them cost nothing (a small dump uses the first one's head).
 * `words`: the same as 32-bit words (a page's first words checked without a
 * BigInt per page).
 */
let copyBufs: { data: Buffer; words: Int32Array }[] | undefined;
function copyBuffers(): { data: Buffer; words: Int32Array }[] {
  return (copyBufs ??= [0, 1].map(() => {
    const sab = new SharedArrayBuffer(CHUNK_PAGES * PAGE_SIZE);
    return { data: Buffer.from(sab), words: new Int32Array(sab) };
  }));
}

function isZeroPage(buf: Buffer, words: Int32Array, off: number): boolean {
  // Most non-zero pages differ in their first words: check them before memcmp.
  if ((words[off >> 2] | words[(off >> 2) + 1]) !== 0) return false;
  return buf.compare(ZERO_PAGE, 0, PAGE_SIZE, off, off + PAGE_SIZE) === 0;
}

/**
 * How a dump takes pages. `tracked`, by VMA start: VMAs whose pages were
 * scanned with write tracking (memory/track.ts): their present pages as
 * regions with categories (no pagemap walk for them), and the parent's pages
 * in the VMA (page numbers): a present page not written since is referred to
 * the parent (PE_PARENT). `running`: the task runs meanwhile (pre-dump), so a
 * page gone before it is read is skipped, not an error.
 */
export interface PagePlan {
  tracked?: Map<bigint, { regions: PageRegion[]; parent: PageRanges }>;
  running?: boolean;
  /** dump --lazy-pages: VMAs (by start) whose pages are not copied but served later (lazy-source.ts), and where each run goes. */
  lazy?: { starts: Set<bigint>; add(vaddr: bigint, n: number): void };
}

const PAGE = BigInt(PAGE_SIZE);
const CHUNK_BYTES = CHUNK_PAGES * PAGE_SIZE;

/**
 * Copies runs of pages into pages-N.img, many runs per system call: runs are
 * gathered (up to the chunk buffer, UIO_MAXIOV of them) and read with one
 * process_vm_readv where the task may read them, through /proc/PID/mem
 * otherwise (it reads PROT_NONE and write-only pages too). All-zero pages of
 * anonymous VMAs are left out.
 */
class PageCopier {
  private addrs: bigint[] = [];
  private lens: number[] = [];
  private used = 0;
  private cv: ClassifiedVma | undefined;
  private readonly bufs = copyBuffers();
  /** The buffer read into next, and each buffer's write-behind job (0: none). */
  private cur = 0;
  private readonly jobs = [0, 0];
  private get data(): Buffer { return this.bufs[this.cur].data; }
  private get words(): Int32Array { return this.bufs[this.cur].words; }

  /** `remote`: the pages go to a page server (pageserver/client.ts), not into `out`. */
  /** `guards`: guard page ranges, never read (a read faults). */
  constructor(private readonly ctx: DumpCtx, private readonly pid: number, private readonly memFd: number, private readonly out: RawImage | undefined,
    private readonly entries: Msg<'pagemap_entry'>[], private readonly running: boolean, private readonly remote: RemotePages | undefined,
    private readonly guards: Range[]) {}

  /** A run of pages the parent images hold (PE_PARENT). */
  parent(vaddr: bigint, nr: number): void {
    this.entries.push({ vaddr, nr_pages: nr, flags: PE.PARENT });
    this.remote?.parent(vaddr, nr);
  }

  add(cv: ClassifiedVma, addr: bigint, pages: number): void {
    if (this.guards.length) {
      const runs = outsideGuards(this.guards, addr, pages);
      if (runs.length !== 1 || runs[0][1] !== pages) { for (const [a, n] of runs) this.addRun(cv, a, n); return; }
    }
    this.addRun(cv, addr, pages);
  }

  private addRun(cv: ClassifiedVma, addr: bigint, pages: number): void {
    if (this.cv !== cv) this.flush();
    this.cv = cv;
    while (pages > 0) {
      if (this.used === CHUNK_BYTES || this.addrs.length === UIO_MAXIOV) this.flush();
      const n = Math.min(pages, (CHUNK_BYTES - this.used) / PAGE_SIZE);
      const last = this.addrs.length - 1;
      if (last >= 0 && this.addrs[last] + BigInt(this.lens[last]) === addr) this.lens[last] += n * PAGE_SIZE;
      else { this.addrs.push(addr); this.lens.push(n * PAGE_SIZE); }
      this.used += n * PAGE_SIZE;
      addr += BigInt(n) * PAGE;
      pages -= n;
    }
  }

  /** Read what is gathered, keep what was read (all of it unless running). */
  private read(): number {
    const cv = this.cv!;
    let got = -1;
    if (cv.vma.prot & PROT.READ) {
      try { got = processVmReadvMany(this.pid, this.addrs, this.lens, this.data); } catch { got = -1; }
    }
    if (got === this.used) return got;
    // /proc/PID/mem, run by run, from the first not read.
    let off = 0;
    for (let i = 0; i < this.addrs.length; i++) {
      const len = this.lens[i];
      if (off + len > got) {
        let n = -1;
        try { n = fs.readSync(this.memFd, this.data, off, len, Number(this.addrs[i])); } catch (e) { if (!this.running) throw e; }
        if (n !== len) {
          if (!this.running) throw new StasisError(ErrorCodes.UNSUPPORTED, `short read of ${len} bytes at ${this.addrs[i].toString(16)} in /proc/${this.pid}/mem`);
          // Gone meanwhile: the pages read so far are kept, the rest of this batch dropped.
          return off + Math.max(0, n - (n % PAGE_SIZE));
        }
      }
      off += len;
    }
    return off;
  }

  flush(): void {
    if (!this.addrs.length) return;
    // This buffer's last write must be done before it is read into again.
    if (this.jobs[this.cur]) { this.out!.settle(this.jobs[this.cur]); this.jobs[this.cur] = 0; }
    const got = this.read();
    const skipZero = this.cv!.policy === 'anon';
    let off = 0; // in the gathered data
    let wStart = 0, wEnd = 0; // a span of it to write in one go
    const spans: number[] = [];
    const writeSpan = () => { if (wEnd > wStart) spans.push(wStart, wEnd - wStart); wStart = wEnd = 0; };
    for (let i = 0; i < this.addrs.length && off < got; i++) {
      const pages = Math.floor(Math.min(this.lens[i], got - off) / PAGE_SIZE);
      let k = 0;
      while (k < pages) {
        if (skipZero && isZeroPage(this.data, this.words, off + k * PAGE_SIZE)) { k++; continue; }
        let m = k + 1;
        while (m < pages && !(skipZero && isZeroPage(this.data, this.words, off + m * PAGE_SIZE))) m++;
        const from = off + k * PAGE_SIZE, to = off + m * PAGE_SIZE;
        const vaddr = this.addrs[i] + BigInt(k) * PAGE;
        if (this.remote) this.remote.present(vaddr, m - k, this.data, from);
        else {
          if (wEnd !== from) { writeSpan(); wStart = from; }
          wEnd = to;
        }
        this.entries.push({ vaddr, nr_pages: m - k, flags: PE.PRESENT });
        this.ctx.pagesCount += m - k;
        this.ctx.pagesBytes += (m - k) * PAGE_SIZE;
        k = m;
      }
      off += this.lens[i];
    }
    if (this.remote) this.remote.send();
    else {
      writeSpan();
      // Written behind: the next chunk goes into the other buffer meanwhile.
      if (spans.length && (this.jobs[this.cur] = this.out!.writeSpans(this.data, spans))) this.cur ^= 1;
    }
    progress.addDone(Math.floor(got / PAGE_SIZE));
    this.addrs = [];
    this.lens = [];
    this.used = 0;
  }
}

/** A tracked VMA: its scanned regions, each written (copied), or unwritten and split between the parent and copies. */
function trackedPages(cv: ClassifiedVma, t: { regions: PageRegion[]; parent: PageRanges }, copier: PageCopier): void {
  let pi = 0;
  for (const r of t.regions) {
    const c = r.categories;
    // cow-copies: only the anonymous (written, copied) pages of a private file mapping.
    if (cv.policy === 'cow-copies' && !(c & PAGE_IS.SWAPPED) && c & PAGE_IS.FILE) continue;
    let p = Number(r.start / PAGE);
    const end = Number(r.end / PAGE);
    if (c & PAGE_IS.WRITTEN) { copier.add(cv, r.start, end - p); continue; }
    const ranges = t.parent;
    while (p < end) {
      while (pi < ranges.length && ranges[pi][1] <= p) pi++;
      const inParent = pi < ranges.length && ranges[pi][0] <= p;
      const to = Math.min(end, inParent ? ranges[pi][1] : pi < ranges.length ? ranges[pi][0] : end);
      if (inParent) { copier.parent(BigInt(p) * PAGE, to - p); progress.addDone(to - p); }
      else copier.add(cv, BigInt(p) * PAGE, to - p);
      p = to;
    }
  }
}

/** Each run of pages of the VMA that pagemap says its policy wants, in address order: (first page's address, count). */
function wantedRuns(cv: ClassifiedVma, pmFd: number, each: (vaddr: bigint, pages: number) => void): void {
  const { pmBuf } = chunkBuffers();
  for (let chunk = cv.vma.start; chunk < cv.vma.end; chunk += BigInt(CHUNK_BYTES)) {
    const chunkEnd = chunk + BigInt(CHUNK_BYTES) < cv.vma.end ? chunk + BigInt(CHUNK_BYTES) : cv.vma.end;
    const pm = readPagemap(pmFd, chunk, chunkEnd, pmBuf);
    const n = pm.length / 8;
    let i = 0;
    while (i < n) {
      if (!wanted(cv.policy, pm.readBigUInt64LE(i * 8))) { i++; continue; }
      let j = i + 1;
      while (j < n && wanted(cv.policy, pm.readBigUInt64LE(j * 8))) j++;
      each(chunk + BigInt(i) * PAGE, j - i);
      i = j;
    }
  }
}

/** An untracked VMA: the wanted pages as pagemap tells, all copied. */
function untrackedPages(cv: ClassifiedVma, pmFd: number, copier: PageCopier): void {
  wantedRuns(cv, pmFd, (vaddr, n) => copier.add(cv, vaddr, n));
}

/** A lazy VMA (dump --lazy-pages): its wanted pages listed PE_LAZY, not read (served from the frozen task later). */
function lazyPages(cv: ClassifiedVma, pmFd: number, entries: Msg<'pagemap_entry'>[], lazy: NonNullable<PagePlan['lazy']>): void {
  wantedRuns(cv, pmFd, (vaddr, n) => {
    const last = entries[entries.length - 1];
    if (last && last.flags === PE.LAZY && last.vaddr + BigInt(last.nr_pages) * PAGE === vaddr) last.nr_pages += n;
    else entries.push({ vaddr, nr_pages: n, flags: PE.LAZY });
    lazy.add(vaddr, n);
    progress.addDone(n);
  });
}

/** Copy the wanted pages of every VMA into pages-N.img (or refer them to the parent); returns the pagemap entries and the guard pages. */
function dumpPages(ctx: DumpCtx, pid: number, vmas: ClassifiedVma[], pagesFile: string, plan: PagePlan = {}, remote?: RemotePages): { entries: Msg<'pagemap_entry'>[]; guards: Range[] } {
  const entries: Msg<'pagemap_entry'>[] = [];
  // Resident pages: the progress line's estimate of what a dump reads.
  if (progress.active) progress.addTotal(residentPages(pid));
  const pmFd = fs.openSync(`/proc/${pid}/pagemap`, 'r');
  const memFd = fs.openSync(`/proc/${pid}/mem`, 'r');
  let out: RawImage | undefined;
  let guards: Range[];
  try {
    guards = guardRanges(pmFd, vmas);
    out = remote ? undefined : ctx.out.create(pagesFile);
  } catch (e) {
    fs.closeSync(memFd);
    fs.closeSync(pmFd);
    throw e;
  }
  const copier = new PageCopier(ctx, pid, memFd, out, entries, plan.running ?? false, remote, guards);
  try {
    for (const cv of vmas) {
      if (cv.policy === 'none') continue;
      if (plan.lazy?.starts.has(cv.vma.start)) { copier.flush(); lazyPages(cv, pmFd, entries, plan.lazy); continue; }
      const t = plan.tracked?.get(cv.vma.start);
      if (t) trackedPages(cv, t, copier);
      else untrackedPages(cv, pmFd, copier);
    }
    copier.flush();
    out?.settle();
  } finally {
    out?.close();
    fs.closeSync(memFd);
    fs.closeSync(pmFd);
  }
  // Parent entries were listed as met, copies as read: in address order they
  // keep the copies' order, which is their pages' order in the file.
  return { entries: entries.sort((a, b) => (a.vaddr < b.vaddr ? -1 : a.vaddr > b.vaddr ? 1 : 0)), guards };
}

/** vma_entry of each VMA; file mappings and memfds get their file entries. */
function vmaEntries(ctx: DumpCtx, pid: number, vmas: ClassifiedVma[], vmFlags: Map<bigint, string[]>): Msg<'vma_entry'>[] {
  return vmas.map((cv) => {
    let shmid = 0n;
    const vf = vmFlags.get(cv.vma.start) ?? [];
    // A shared mapping of a file opened for writing may be made writable ('mw', VM_MAYWRITE), even while read-only now.
    const mode = cv.vma.shared && vf.includes('mw') ? O.RDWR : O.RDONLY;
    if (cv.memfd) {
      const via = `/proc/${pid}/map_files/${cv.vma.start.toString(16)}-${cv.vma.end.toString(16)}`;
      dumpMemfdInode(ctx, cv.vma.inode, cv.vma.path, via);
      shmid = BigInt(memfdFileId(ctx, cv.vma.inode, mode));
    } else if (cv.file) {
      // Stat through map_files: the path is the task's view (its own mount namespace maybe).
      const via = `/proc/${pid}/map_files/${cv.vma.start.toString(16)}-${cv.vma.end.toString(16)}`;
      shmid = BigInt(cv.deleted ? mappedGhostEntry(ctx, cv.file, via, mode) : regFileEntry(ctx, cv.file, mode, { statPath: via }));
    }
    else if (cv.policy === 'shared-anon') shmid = BigInt(cv.vma.inode);
    const madv = madvOf(vf);
    return {
      start: cv.vma.start, end: cv.vma.end, pgoff: cv.vma.pgoff, shmid, prot: cv.vma.prot,
      flags: mapFlagsOf(cv.flags, vf), status: cv.status, fd: -1n, madv: madv || undefined,
    };
  });
}

/** pages-N.img and pagemap-PID.img of a process (a pre-dump writes only these); returns its guard page ranges. */
export function dumpPagemap(ctx: DumpCtx, pd: ProcessDump, vmas: ClassifiedVma[], plan: PagePlan): Range[] {
  // With a page server the pages go there; the receiver names the pages file.
  const remote = ctx.pageXfer?.open(pd.vpid);
  const pagesId = remote ? remote.pagesId : ctx.allocPagesId();
  const { entries: pages, guards } = dumpPages(ctx, pd.pid, vmas, `pages-${pagesId}.img`, plan, remote);
  if (remote) {
    ctx.out.remote(remote.finish());
  }
  // Written whole (hashed from memory like ctx.write's), encoded by the fast path.
  const f = ctx.out.create(`pagemap-${pd.vpid}.img`);
  try { f.write(encodePagemap(pagesId, pages)); } finally { f.close(); }
  return guards;
}

/** Dump the address space of a frozen process (pages unchanged since `parent` referred to it). */
export function dumpMemory(ctx: DumpCtx, pd: ProcessDump, facts: MmFacts, parent?: ParentImages): void {
  const pid = pd.pid;
  const vmas = readMaps(pid).map(classify);
  const vmFlags = parseVmFlags(fs.readFileSync(`/proc/${pid}/smaps`, 'utf8'));
  // MAP_DROPPABLE memory may be dropped by the kernel at any time: not
  // carried (as criu), it comes back zero.
  for (const cv of vmas) if (vmFlags.get(cv.vma.start)?.includes('dp')) cv.policy = 'none';
  const vmaList = vmaEntries(ctx, pid, vmas, vmFlags);
  const plan = pagePlan(parent, pd, vmas, facts.track);
  const src = ctx.lazySource;
  if (src) plan.lazy = { starts: new Set(vmaList.filter(isLazyVma).map((v) => v.start)), add: (vaddr, n) => src.add(pd.vpid, pid, vaddr, n) };
  // Before the pages: reading an AIO ring faults in what the kernel wrote there unseen by pagemap.
  const aios = aioRings(pid, vmas);
  vmaList.push(...guardEntries(dumpPagemap(ctx, pd, vmas, plan)));
  const st = pd.stat;
  let exeFileId = 0;
  try {
    exeFileId = regFileEntry(ctx, fs.readlinkSync(`/proc/${pid}/exe`), O.RDONLY, { statPath: `/proc/${pid}/exe` });
  } catch { /* no exe link (exited exe?): leave 0 */ }
  const mm: Msg<'mm_entry'> = {
    mm_start_code: st.startCode, mm_end_code: st.endCode, mm_start_data: st.startData, mm_end_data: st.endData,
    mm_start_stack: st.startStack, mm_start_brk: st.startBrk, mm_brk: facts.brk,
    mm_arg_start: st.argStart, mm_arg_end: st.argEnd, mm_env_start: st.envStart, mm_env_end: st.envEnd,
    exe_file_id: exeFileId, mm_saved_auxv: readAuxv(pid), vmas: vmaList, dumpable: facts.dumpable,
    thp_disabled: facts.thpDisabled || undefined, aios,
  };
  ctx.write(`mm-${pd.vpid}.img`, 'MM', parts('mm_entry', [mm]));
}
