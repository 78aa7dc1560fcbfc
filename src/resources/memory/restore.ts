// Restore of an address space, in the new task: every VMA mapped at its
// address, pages written in, protections and advice put back, and the mm
// fields (code/data/brk/stack/args/env, auxv, exe) set in one prctl.
import { guardCalls } from './guards';
import * as fs from 'node:fs';
import { abi } from '../../sys';
import { inBuf, linked, cstr, type RemoteBuf } from '../../compel/remote';
import { SyscallError, remoteResult } from '../../errors';
import type { Msg } from '../../images/schema';
import { VMA } from '../../images/criu';
import { StasisError, ErrorCodes } from '../../errors';
import type { RestoreCtx, TaskRestore } from '../../unit/restore-ctx';
import { fileEntry } from '../files';
import { openMemfd } from '../memfd';
import { checkRegFile, taskPath, ghostFor } from '../regfile';
import type { LoadedMm, PageSource } from './load';
import { sharedAnonFds } from './shared-anon';
import { heldVmas } from './inherit';
import { chunkBuffers, CHUNK_PAGES } from './dump';
import { progress } from '../../progress';
import { PageFiller } from './fill';
import { fillInParallel, PARALLEL_MIN_BYTES, type FillJob } from './fill-pool';

const { MAP, PROT, PAGE_SIZE, O, MADV, PR, PR_SET_MM, PRCTL_MM_MAP, AT_FDCWD, u64s } = abi;
const PAGE = BigInt(PAGE_SIZE);

/** VMAs mapped writable for filling, to be put back to their protection, by pid. */
export type Reprotect = Map<number, { start: bigint; len: bigint; prot: number }[]>;

function needsPages(m: LoadedMm, start: bigint, end: bigint): boolean {
  return m.pagemap.some((e) => e.vaddr < end && e.vaddr + BigInt(e.nrPages) * PAGE > start);
}

/**
 * Map every dumped VMA at its address, with its flags, but those the task
 * already has from its parent (inherit.ts). VMAs that will get pages are
 * mapped writable first and put back to their protection after the pages are
 * in (restoreProtections).
 */
export function restoreAddressSpace(ctx: RestoreCtx, tr: TaskRestore, m: LoadedMm, reprotect: Reprotect, all: Map<number, LoadedMm>): void {
  const held = heldVmas(ctx, tr.img.pid);
  // [vdso]/[vvar] moved with the stub, [vsyscall] fixed.
  const vmas = (m.mm.vmas ?? []).filter((v) => !(v.status & (VMA.AREA_VDSO | VMA.AREA_VVAR | VMA.AREA_VSYSCALL)) && !held.has(v));
  mapVmas(ctx, tr, m, vmas, reprotect, all);
}

/** Map these VMAs of the task (none of them mapped yet), noting in `reprotect` those mapped writable to be filled. */
export function mapVmas(ctx: RestoreCtx, tr: TaskRestore, m: LoadedMm, vmas: Msg<'vma_entry'>[], reprotect: Reprotect, all: Map<number, LoadedMm>): void {
  const t = tr.task;
  let mine = reprotect.get(tr.img.pid);
  if (!mine) reprotect.set(tr.img.pid, (mine = []));
  const fds = new Map<Msg<'vma_entry'>, number>();
  try {
    openMapped(ctx, tr, vmas, fds);
    sharedAnonFds(ctx, tr, all, vmas, fds);
    // Every mapping in one batch (independent calls): one stop on the trampoline.
    const maps = vmas.map((v) => {
      const fill = !(v.status & VMA.FILE_SHARED) && needsPages(m, v.start, v.end);
      const prot = v.prot | (fill ? PROT.WRITE : 0);
      // Locking (mlock) comes after the pages are in: see restoreAdvice.
      const flags = (v.flags & ~(MAP.FIXED | MAP.LOCKED)) | MAP.FIXED_NOREPLACE;
      const fd = fds.get(v);
      if (prot !== v.prot) mine!.push({ start: v.start, len: v.end - v.start, prot: v.prot });
      return fd === undefined ? ['mmap', v.start, v.end - v.start, prot, flags | MAP.ANONYMOUS, -1, 0] as const : ['mmap', v.start, v.end - v.start, prot, flags & ~MAP.ANONYMOUS, fd, v.pgoff] as const;
    });
    for (const r of t.callMany(maps.map((c) => [...c]))) remoteResult(r, 'mmap', `in task ${t.pid}`);
  } finally {
    if (fds.size) t.callMany([...fds.values()].map((fd) => ['close', fd]));
  }
}

/** An fd in the task for each file VMA (into `fds`): regular files opened in one batch, checked here. */
function openMapped(ctx: RestoreCtx, tr: TaskRestore, vmas: Msg<'vma_entry'>[], fds: Map<Msg<'vma_entry'>, number>): void {
  const t = tr.task;
  const files = vmas.filter((v) => v.status & (VMA.FILE_PRIVATE | VMA.FILE_SHARED));
  const regular = files.filter((v) => !(v.status & VMA.AREA_MEMFD));
  const opened = t.callMany(regular.map((v) => {
    const reg = fileEntry(ctx, Number(v.shmid)).reg!;
    // As the file was opened: a shared mapping's later mprotect(PROT_WRITE) depends on it.
    const writable = (v.status & VMA.FILE_SHARED) !== 0 && ((v.prot & PROT.WRITE) !== 0 || (reg.flags & O.ACCMODE) === O.RDWR);
    return ['openat', AT_FDCWD, cstr(taskPath(ctx, reg)), writable ? O.RDWR : O.RDONLY, 0];
  }));
  let failed: bigint | undefined;
  regular.forEach((v, i) => { if (opened[i] >= 0n) fds.set(v, Number(opened[i])); else failed ??= opened[i]; });
  if (failed !== undefined) throw new SyscallError('remote openat', Number(-failed), `in task ${t.pid}`);
  for (const v of files) if (v.status & VMA.AREA_MEMFD) fds.set(v, openMemfd(ctx, tr, fileEntry(ctx, Number(v.shmid)).memfd!, true));
  if (ctx.fsRoot) {
    for (const v of regular) {
      const f = fileEntry(ctx, Number(v.shmid));
      if (ghostFor(ctx, f.reg!) !== undefined) continue; // made by us just now
      checkRegFile({ ...f.reg!, name: `/proc/${t.pid}/fd/${fds.get(v)}` }, `mapping of ${f.reg!.name}`, ctx.opts.skipFileCheck ?? false);
    }
  }
}

/** Address spaces whose pages the progress line counts already (an inherited part comes in first, inherit.ts). */
const counted = new WeakSet<LoadedMm>();

/**
 * Fill pages through /proc/PID/mem (works whatever the protection), from
 * pages-N.img of this checkpoint or of its parents (PE_PARENT entries).
 */
export function restorePages(ctx: RestoreCtx, tr: TaskRestore, m: LoadedMm, sources: PageSource[] = m.sources): void {
  if (sources.length === 0) return;
  const end = (s: PageSource) => s.vaddr + BigInt(s.nrPages) * PAGE;
  const filler = PageFiller.open(tr, m, (a, b) => sources.some((s) => s.vaddr < b && end(s) > a));
  // Fault big runs in with one call rather than a page fault per page (not those copied in whole by userfaultfd: fill.ts).
  for (const e of sources) if (e.nrPages >= 16 && !filler.copies(e.vaddr, end(e))) tr.task.callRaw('madvise', e.vaddr, BigInt(e.nrPages) * PAGE, MADV.POPULATE_WRITE);
  const files = new Map<string, number>();
  const buf = chunkBuffers().data;
  if (!counted.has(m)) progress.addTotal(m.sources.reduce((a, src) => a + src.nrPages, 0));
  counted.add(m);
  /** One chunk of a source's pages, read and written here (checked first where the digest is deferred). */
  type Chunk = { src: PageSource; inFd: number; done: number; n: number };
  const one = ({ src, inFd, done, n }: Chunk) => {
    const len = n * PAGE_SIZE;
    const fileOff = src.fileOff + done * PAGE_SIZE;
    const got = fs.readSync(inFd, buf, 0, len, fileOff);
    if (got !== len) throw new StasisError(ErrorCodes.BAD_IMAGE, `${src.images.path(src.pagesFile)}: short read at offset ${fileOff}`);
    src.images.verifyRange(src.pagesFile, inFd, fileOff, len);
    filler.write(src.vaddr + BigInt(done) * PAGE, buf, len);
    progress.addDone(n);
  };
  try {
    // Chunks for the two filling threads (fill-pool.ts): eager, into UFFDIO_COPY VMAs; the rest here.
    const copied: Chunk[] = [], here: Chunk[] = [];
    for (const src of sources) {
      const pagesPath = src.images.path(src.pagesFile);
      let inFd = files.get(pagesPath);
      if (inFd === undefined) files.set(pagesPath, (inFd = src.images.open(src.pagesFile)));
      const toCopy = filler.copyFd >= 0 && !src.images.deferred && filler.copies(src.vaddr, end(src));
      for (let done = 0; done < src.nrPages; done += CHUNK_PAGES) (toCopy ? copied : here).push({ src, inFd, done, n: Math.min(CHUNK_PAGES, src.nrPages - done) });
    }
    const jobs = copied.map((c): FillJob => [c.inFd, c.src.fileOff + c.done * PAGE_SIZE, c.src.vaddr + BigInt(c.done) * PAGE, c.n * PAGE_SIZE]);
    // Two threads when there is enough; a chunk not copied whole there (a page there already,
    // a short read), or all of them with one thread only, the careful way here.
    const results = jobs.reduce((a, j) => a + j[3], 0) >= PARALLEL_MIN_BYTES ? fillInParallel(jobs, filler.copyFd, buf) : undefined;
    copied.forEach((c, i) => (results?.[i] === jobs[i][3] ? progress.addDone(c.n) : one(c)));
    for (const c of here) one(c);
  } finally {
    filler.close();
    for (const fd of files.values()) fs.closeSync(fd);
  }
}

export function restoreProtections(tr: TaskRestore, reprotect: Reprotect): void {
  tr.task.callAll((reprotect.get(tr.img.pid) ?? []).map((r) => ['mprotect', r.start, r.len, r.prot]));
}

/** madvise() advice and mlock, on the final VMAs (in order, in one batch). */
export function restoreAdvice(tr: TaskRestore, m: LoadedMm): void {
  const calls: Parameters<typeof tr.task.callAll>[0] = [];
  for (const v of m.mm.vmas ?? []) {
    const len = v.end - v.start;
    const madv = v.madv ?? 0n;
    for (let a = 0; a < 64; a++) if ((madv >> BigInt(a)) & 1n) calls.push(['madvise', v.start, len, a]);
    if (v.flags & MAP.LOCKED) calls.push(['mlock', v.start, len]);
  }
  // Guard pages last: their pages hold nothing, and the calls above may not touch them.
  calls.push(...guardCalls(m.guards));
  tr.task.callAll(calls);
}

/** mm fields, auxv and exe link in one prctl(PR_SET_MM, PR_SET_MM_MAP); THP. (dumpable: creds.ts, last.) */
export function restoreMm(ctx: RestoreCtx, tr: TaskRestore, m: LoadedMm): void {
  const mm = m.mm;
  const t = tr.task;
  const auxv: RemoteBuf = inBuf(u64s(mm.mm_saved_auxv ?? []));
  let exeFd = -1;
  if (mm.exe_file_id) exeFd = t.open(fileEntry(ctx, mm.exe_file_id).reg!.name, O.RDONLY);
  try {
    const map = linked(PRCTL_MM_MAP.size, [auxv], (at) => PRCTL_MM_MAP.encode({
      start_code: mm.mm_start_code, end_code: mm.mm_end_code, start_data: mm.mm_start_data, end_data: mm.mm_end_data,
      start_brk: mm.mm_start_brk, brk: mm.mm_brk, start_stack: mm.mm_start_stack, arg_start: mm.mm_arg_start,
      arg_end: mm.mm_arg_end, env_start: mm.mm_env_start, env_end: mm.mm_env_end,
      auxv: at(auxv), auxv_size: auxv.len, exe_fd: exeFd,
    }));
    t.call('prctl', PR.SET_MM, PR_SET_MM.MAP, map, PRCTL_MM_MAP.size, 0);
  } finally {
    if (exeFd >= 0) t.call('close', exeFd);
  }
  if (mm.thp_disabled) t.call('prctl', PR.SET_THP_DISABLE, 1, 0, 0, 0);
}
