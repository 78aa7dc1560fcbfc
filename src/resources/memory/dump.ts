// Dump of an address space: mm-PID.img (mm fields, auxv, VMAs),
// pagemap-PID.img and pages-N.img. All-zero pages of anonymous mappings are
// left out: a fresh anonymous mapping reads as zero anyway.
import * as fs from 'node:fs';
import { abi, processVmReadv } from '../../sys';
import { readMaps, readAuxv, readPagemap } from '../../proc/proc';
import { parts, type Msg } from '../../images/image';
import { PE } from '../../images/criu';
import { StasisError, ErrorCodes } from '../../errors';
import type { DumpCtx, ProcessDump } from '../../unit/dump-ctx';
import { regFileEntry } from '../regfile';
import { dumpMemfdInode, memfdFileId } from '../memfd';
import { classify, wanted, parseVmFlags, madvOf, type ClassifiedVma } from './classify';
import type { PageRanges, ParentImages } from './parent';
import type { ProcTracking } from './track';
import { pagePlan } from './incremental';

const { MAP, PAGE_SIZE, PROT, O } = abi;

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

function isZeroPage(buf: Buffer, off: number): boolean {
  // Most non-zero pages differ in their first word: check it before memcmp.
  if (buf.readBigUInt64LE(off) !== 0n) return false;
  return buf.compare(ZERO_PAGE, 0, PAGE_SIZE, off, off + PAGE_SIZE) === 0;
}

/**
 * How a dump takes pages: `parent` gives, by VMA start, the page numbers it
 * refers to the parent for (PE_PARENT entries: unchanged since the parent
 * copied them); `running`: the task runs meanwhile (pre-dump), so a page
 * gone before it is read is skipped, not an error.
 */
export interface PagePlan { parent?: Map<bigint, PageRanges>; running?: boolean }

/** Read `len` bytes of the task at `at` into the chunk buffer; returns bytes read (short only if `running`). */
function readRun(pid: number, memFd: number, cv: ClassifiedVma, at: bigint, len: number, data: Buffer, running: boolean): number {
  let got = -1;
  if (cv.vma.prot & PROT.READ) {
    try { got = processVmReadv(pid, at, data, len); } catch { got = -1; }
  }
  if (got !== len) {
    try { got = fs.readSync(memFd, data, 0, len, Number(at)); } catch (e) { if (!running) throw e; }
  }
  if (got !== len && !running) throw new StasisError(ErrorCodes.UNSUPPORTED, `short read of ${len} bytes at ${at.toString(16)} in /proc/${pid}/mem`);
  return Math.max(0, got) - (Math.max(0, got) % PAGE_SIZE);
}

/** Copy the wanted pages of every VMA into pages-N.img; returns the pagemap entries. */
function dumpPages(ctx: DumpCtx, pid: number, vmas: ClassifiedVma[], pagesFile: string, plan: PagePlan = {}): Msg<'pagemap_entry'>[] {
  const entries: Msg<'pagemap_entry'>[] = [];
  const pmFd = fs.openSync(`/proc/${pid}/pagemap`, 'r');
  const memFd = fs.openSync(`/proc/${pid}/mem`, 'r');
  const out = ctx.out.create(pagesFile);
  const { pmBuf, data } = chunkBuffers();
  const write = (off: number, len: number) => out.write(data, off, len);
  try {
    for (const cv of vmas) {
      if (cv.policy === 'none') continue;
      const skipZero = cv.policy === 'anon';
      const fromParent = plan.parent?.get(cv.vma.start) ?? [];
      let pi = 0;
      /** Whether page number `p` is the parent's (called with increasing p). */
      const inParent = (p: number) => {
        while (pi < fromParent.length && fromParent[pi][1] <= p) pi++;
        return pi < fromParent.length && fromParent[pi][0] <= p;
      };
      for (let chunk = cv.vma.start; chunk < cv.vma.end; chunk += BigInt(CHUNK_PAGES * PAGE_SIZE)) {
        const chunkEnd = chunk + BigInt(CHUNK_PAGES * PAGE_SIZE) < cv.vma.end ? chunk + BigInt(CHUNK_PAGES * PAGE_SIZE) : cv.vma.end;
        const pm = readPagemap(pmFd, chunk, chunkEnd, pmBuf);
        const n = pm.length / 8;
        const page0 = Number(chunk / BigInt(PAGE_SIZE));
        // Runs of wanted pages, each either the parent's or read in one go:
        // process_vm_readv where the task may read (faster), /proc/PID/mem
        // otherwise (it reads PROT_NONE and write-only pages too).
        let i = 0;
        while (i < n) {
          if (!wanted(cv.policy, pm.readBigUInt64LE(i * 8))) { i++; continue; }
          const parent = inParent(page0 + i);
          let j = i + 1;
          while (j < n && wanted(cv.policy, pm.readBigUInt64LE(j * 8)) && inParent(page0 + j) === parent) j++;
          const runStart = chunk + BigInt(i * PAGE_SIZE);
          if (parent) {
            entries.push({ vaddr: runStart, nr_pages: j - i, flags: PE.PARENT });
            i = j;
            continue;
          }
          const got = readRun(pid, memFd, cv, runStart, (j - i) * PAGE_SIZE, data, plan.running ?? false) / PAGE_SIZE;
          // Sub-runs of non-zero pages.
          let k = 0;
          while (k < got) {
            if (skipZero && isZeroPage(data, k * PAGE_SIZE)) { k++; continue; }
            let m = k + 1;
            while (m < got && !(skipZero && isZeroPage(data, m * PAGE_SIZE))) m++;
            write(k * PAGE_SIZE, (m - k) * PAGE_SIZE);
            entries.push({ vaddr: runStart + BigInt(k * PAGE_SIZE), nr_pages: m - k, flags: PE.PRESENT });
            ctx.pagesCount += m - k;
            ctx.pagesBytes += (m - k) * PAGE_SIZE;
            k = m;
          }
          i = j;
        }
      }
    }
  } finally {
    out.close();
    fs.closeSync(memFd);
    fs.closeSync(pmFd);
  }
  return entries;
}

/** vma_entry of each VMA; file mappings and memfds get their file entries. */
function vmaEntries(ctx: DumpCtx, pid: number, vmas: ClassifiedVma[]): Msg<'vma_entry'>[] {
  const vmFlags = parseVmFlags(fs.readFileSync(`/proc/${pid}/smaps`, 'utf8'));
  return vmas.map((cv) => {
    let shmid = 0n;
    if (cv.memfd) {
      const via = `/proc/${pid}/map_files/${cv.vma.start.toString(16)}-${cv.vma.end.toString(16)}`;
      dumpMemfdInode(ctx, cv.vma.inode, cv.vma.path, via);
      shmid = BigInt(memfdFileId(ctx, cv.vma.inode, cv.vma.shared && cv.vma.prot & PROT.WRITE ? O.RDWR : O.RDONLY));
    } else if (cv.file) {
      // Stat through map_files: the path is the task's view (its own mount namespace maybe).
      const via = `/proc/${pid}/map_files/${cv.vma.start.toString(16)}-${cv.vma.end.toString(16)}`;
      shmid = BigInt(regFileEntry(ctx, cv.file, cv.vma.shared ? O.RDWR : O.RDONLY, { statPath: via }));
    }
    else if (cv.policy === 'shared-anon') shmid = BigInt(cv.vma.inode);
    const vf = vmFlags.get(cv.vma.start) ?? [];
    const madv = madvOf(vf);
    return {
      start: cv.vma.start, end: cv.vma.end, pgoff: cv.vma.pgoff, shmid, prot: cv.vma.prot,
      flags: cv.flags | (vf.includes('lo') ? MAP.LOCKED : 0), status: cv.status, fd: -1n, madv: madv || undefined,
    };
  });
}

/** pages-N.img and pagemap-PID.img of a process (a pre-dump writes only these). */
export function dumpPagemap(ctx: DumpCtx, pd: ProcessDump, vmas: ClassifiedVma[], plan: PagePlan): void {
  const pagesId = ctx.allocPagesId();
  const pages = dumpPages(ctx, pd.pid, vmas, `pages-${pagesId}.img`, plan);
  ctx.write(`pagemap-${pd.vpid}.img`, 'PAGEMAP', [{ msg: 'pagemap_head', entry: { pages_id: pagesId } }, ...parts('pagemap_entry', pages)]);
}

/** Dump the address space of a frozen process (pages unchanged since `parent` referred to it). */
export function dumpMemory(ctx: DumpCtx, pd: ProcessDump, facts: MmFacts, parent?: ParentImages): void {
  const pid = pd.pid;
  const vmas = readMaps(pid).map(classify);
  dumpPagemap(ctx, pd, vmas, pagePlan(parent, pd, vmas, facts.track));
  const st = pd.stat;
  let exeFileId = 0;
  try {
    exeFileId = regFileEntry(ctx, fs.readlinkSync(`/proc/${pid}/exe`), O.RDONLY, { statPath: `/proc/${pid}/exe` });
  } catch { /* no exe link (exited exe?): leave 0 */ }
  const mm: Msg<'mm_entry'> = {
    mm_start_code: st.startCode, mm_end_code: st.endCode, mm_start_data: st.startData, mm_end_data: st.endData,
    mm_start_stack: st.startStack, mm_start_brk: st.startBrk, mm_brk: facts.brk,
    mm_arg_start: st.argStart, mm_arg_end: st.argEnd, mm_env_start: st.envStart, mm_env_end: st.envEnd,
    exe_file_id: exeFileId, mm_saved_auxv: readAuxv(pid), vmas: vmaEntries(ctx, pid, vmas), dumpable: facts.dumpable,
    thp_disabled: facts.thpDisabled || undefined,
  };
  ctx.write(`mm-${pd.vpid}.img`, 'MM', parts('mm_entry', [mm]));
}
