// Lazy restore (--lazy-pages), the restore side: which pages wait, the
// userfaultfd of each process, and its arming just before the tree runs.
// Serving the faults is restore/lazy-server.ts.
//
// Lazy: the pages of private anonymous VMAs (heap and stacks included), as
// criu; not of MAP_LOCKED ones (mlock faults them in), shared or file
// mappings, or [vdso]/[vvar]. Those pages are not written by the `pages`
// phase; everything else is restored as usual.
//
// The userfaultfd must be opened by the task (it binds to the caller's mm):
// `lazy-open` runs userfaultfd() in each process by a remote syscall, takes
// our copy with pidfd_getfd and closes the task's fd at once (the task never
// holds it). Kernel faults are served too (no UFFD_USER_MODE_ONLY: a read()
// into lazy memory must fault to us, not fail with EFAULT); this needs
// privilege in the task, which it has until the `creds` phase (afterAll).
// UFFDIO_API asks for the fork, remap, remove and unmap events: without them
// a child forked during the lazy period, a moved VMA or a range dropped with
// MADV_DONTNEED would silently read zeros or stale image data.
//
// Registration (MISSING mode) comes last, in armLazy(), after every restore
// phase: none of the restore's own remote syscalls (rseq registration,
// thread state, pending signals, mm, creds...) can then block on a fault
// that nobody serves yet. A page of a lazy VMA that something touched before
// the registration (the kernel writing an rseq area, say) is present, so
// would never fault: it gets its image contents through /proc/PID/mem here.
import * as fs from 'node:fs';
import { abi, uffdApi, uffdRegisterMissing, pagemapScanRegions } from '../../sys';
import { openedInTask } from '../../compel/give-fd';
import type { Msg } from '../../images/schema';
import { VMA } from '../../images/criu';
import { StasisError, ErrorCodes, SyscallError } from '../../errors';
import type { RestoreCtx, TaskRestore } from '../../unit/restore-ctx';
import type { LoadedMm, PageSource } from './load';
import type { ImageReader } from '../../images/image';
import { pageReader, type PageReader, type PageRun } from '../../restore/page-source';

const { O, MAP, PAGE_SIZE, UFFD_FEATURE, PAGE_IS } = abi;
const PAGE = BigInt(PAGE_SIZE);

/** The events we need to follow the task's own changes to its lazy memory. */
export const LAZY_FEATURES = UFFD_FEATURE.EVENT_FORK | UFFD_FEATURE.EVENT_REMAP | UFFD_FEATURE.EVENT_REMOVE | UFFD_FEATURE.EVENT_UNMAP;

/** A run of lazy pages still to copy: [start, end) of the task, from `fd` at `off` (fd < 0: from the source's server, as `vpid`: post-copy). */
export interface Seg { start: bigint; end: bigint; fd: number; off: number; vpid?: number }

/** One process's lazy memory, handed to the server. */
export interface LazyProc {
  /** Our pid of the process (0: a child forked during the lazy period, pid unknown). */
  pid: number;
  /** Our copy of its userfaultfd. */
  uffd: number;
  /** Registered ranges (unregistered before the fd is closed). */
  ranges: [bigint, bigint][];
  /** Pages still to copy, in address order. */
  segs: Seg[];
}

export interface LazyJob {
  procs: LazyProc[];
  /** Pages files opened for the server (closed by it). */
  files: number[];
  /** Where the pages are read (restore/page-source.ts). */
  reader: PageReader;
  /** What the reader reads, for a handover to another server (restore/lazy-handover.ts): each file's images and name, the source's server. */
  pagesFiles: { fd: number; images: ImageReader; name: string }[];
  remote?: import('../../pageserver/lazy-client').LazyRemote;
}

export function isLazyVma(v: Msg<'vma_entry'>): boolean {
  return (v.status & VMA.ANON_PRIVATE) !== 0 && (v.flags & MAP.PRIVATE) !== 0 && (v.flags & MAP.ANONYMOUS) !== 0 &&
    (v.flags & MAP.LOCKED) === 0 && !(v.status & (VMA.AREA_VDSO | VMA.AREA_VVAR | VMA.AREA_VSYSCALL));
}

const splits = new WeakMap<LoadedMm, { eager: PageSource[]; lazy: PageSource[]; ranges: [bigint, bigint][] }>();

/** The process's page sources split into eager and lazy ones (lazy VMAs' ranges too). */
export function splitSources(m: LoadedMm): { eager: PageSource[]; lazy: PageSource[]; ranges: [bigint, bigint][] } {
  let s = splits.get(m);
  if (s) return s;
  const ranges = (m.mm.vmas ?? []).filter(isLazyVma).map((v) => [v.start, v.end] as [bigint, bigint]);
  const eager: PageSource[] = [], lazy: PageSource[] = [];
  const piece = (src: PageSource, a: bigint, b: bigint): PageSource =>
    ({ ...src, vaddr: a, nrPages: Number((b - a) / PAGE), fileOff: src.fileOff + Number(a - src.vaddr) });
  let ri = 0;
  for (const src of m.sources) {
    const end = src.vaddr + BigInt(src.nrPages) * PAGE;
    while (ri < ranges.length && ranges[ri][1] <= src.vaddr) ri++;
    let at = src.vaddr;
    for (let j = ri; j < ranges.length && ranges[j][0] < end && at < end; j++) {
      const [rs, re] = ranges[j];
      if (rs > at) { eager.push(piece(src, at, rs)); at = rs; }
      const stop = re < end ? re : end;
      if (stop > at) { lazy.push(piece(src, at, stop)); at = stop; }
    }
    if (at < end) eager.push(piece(src, at, end));
  }
  s = { eager, lazy, ranges };
  splits.set(m, s);
  return s;
}

/** Our userfaultfds of the restore's processes, by pid in the images, until the server takes them. */
const opened = new WeakMap<RestoreCtx, Map<number, number>>();

/** Phase lazy-open: a userfaultfd of the task's mm, ours only. */
export function openLazy(ctx: RestoreCtx, tr: TaskRestore, m: LoadedMm): void {
  if (!ctx.opts.lazyPages || splitSources(m).lazy.length === 0) return;
  const t = tr.task;
  const ours = openedInTask(t, 'userfaultfd', O.CLOEXEC | O.NONBLOCK);
  if (ours < 0) {
    throw new StasisError(ErrorCodes.UNSUPPORTED, `--lazy-pages: userfaultfd() in task ${t.pid} failed (${new SyscallError('userfaultfd', -ours).message}): kernel faults need CAP_SYS_PTRACE or vm.unprivileged_userfaultfd`);
  }
  let map = opened.get(ctx);
  if (!map) opened.set(ctx, (map = new Map()));
  map.set(tr.img.pid, ours);
  const offered = Number(uffdApi(ours, LAZY_FEATURES));
  if ((offered & LAZY_FEATURES) !== LAZY_FEATURES) throw new StasisError(ErrorCodes.UNSUPPORTED, `--lazy-pages: this kernel's userfaultfd lacks the fork/remap/remove/unmap events (offers 0x${offered.toString(16)})`);
}

/** A failed restore: our userfaultfds go (the tasks are killed anyway). */
export function dropLazy(ctx: RestoreCtx): void {
  for (const fd of opened.get(ctx)?.values() ?? []) fs.closeSync(fd);
  opened.delete(ctx);
}

/** Write sources into the task through /proc/PID/mem (present pages, or a VMA the kernel would not register). */
function writeNow(pid: number, srcs: PageSource[], runOf: (s: PageSource) => PageRun, reader: PageReader): void {
  if (!srcs.length) return;
  const mem = fs.openSync(`/proc/${pid}/mem`, 'r+');
  try {
    for (const s of srcs) {
      const len = s.nrPages * PAGE_SIZE;
      const b = Buffer.allocUnsafe(len);
      reader.read(runOf(s), s.vaddr, b, len);
      if (fs.writeSync(mem, b, 0, len, Number(s.vaddr)) !== len) throw new StasisError(ErrorCodes.RESTORE_FAILED, `short write of pages at ${s.vaddr.toString(16)} in ${pid}`);
    }
  } finally {
    fs.closeSync(mem);
  }
}

/** Cut [a, b) out of sorted sources: what is inside goes to `cut`. */
function cutOut(srcs: PageSource[], a: bigint, b: bigint, cut: PageSource[]): PageSource[] {
  const out: PageSource[] = [];
  for (const s of srcs) {
    const e = s.vaddr + BigInt(s.nrPages) * PAGE;
    if (e <= a || s.vaddr >= b) { out.push(s); continue; }
    const piece = (x: bigint, y: bigint): PageSource => ({ ...s, vaddr: x, nrPages: Number((y - x) / PAGE), fileOff: s.fileOff + Number(x - s.vaddr) });
    if (s.vaddr < a) out.push(piece(s.vaddr, a));
    cut.push(piece(s.vaddr > a ? s.vaddr : a, e < b ? e : b));
    if (e > b) out.push(piece(b, e));
  }
  return out;
}

/**
 * Register every lazy VMA of every process (MISSING mode) on its userfaultfd
 * and hand the lot to the server. Runs after every restore phase, before the
 * tasks are let go.
 */
export function armLazy(ctx: RestoreCtx, mms: Map<number, LoadedMm>): LazyJob {
  // Every byte read from a pages file is checked against the digest first (chunks left to the reader: lazy).
  const byFd = new Map<number, PageSource>();
  const check = (fd: number, off: number, len: number, streaming: boolean) => { const s = byFd.get(fd); s?.images.verifyRange(s.pagesFile, fd, off, len, streaming); };
  const job: LazyJob = { procs: [], files: [], reader: pageReader(ctx.opts.lazyRemote, check), pagesFiles: [], remote: ctx.opts.lazyRemote };
  const files = new Map<string, number>();
  const fdOf = (s: PageSource) => {
    const p = s.images.path(s.pagesFile);
    let fd = files.get(p);
    if (fd === undefined) {
      files.set(p, (fd = s.images.open(s.pagesFile)));
      job.files.push(fd);
      byFd.set(fd, s);
      job.pagesFiles.push({ fd, images: s.images, name: s.pagesFile });
    }
    return fd;
  };
  // Post-copy pages (s.remote): read from the source's server; a virtual offset (the address) keeps runs mergeable.
  const runOf = (s: PageSource): PageRun => (s.remote !== undefined ? { start: s.vaddr, fd: -1, off: Number(s.vaddr), vpid: s.remote } : { start: s.vaddr, fd: fdOf(s), off: s.fileOff });
  const ours = opened.get(ctx) ?? new Map<number, number>();
  try {
    for (const [vpid, uffd] of ours) {
      const pid = ctx.tasks.get(vpid)!.task.pid;
      const { lazy, ranges } = splitSources(mms.get(vpid)!);
      let todo = lazy;
      const now: PageSource[] = [];
      const registered: [bigint, bigint][] = [];
      for (const [a, b] of ranges) {
        // A VMA the kernel will not register is filled now, as an eager one.
        if (uffdRegisterMissing(uffd, a, b - a) < 0) todo = cutOut(todo, a, b, now);
        else registered.push([a, b]);
      }
      // Pages touched before the registration are there and will never fault.
      const pm = fs.openSync(`/proc/${pid}/pagemap`, 'r');
      try {
        for (const [a, b] of registered) {
          for (const r of pagemapScanRegions(pm, a, b, 0, { anyOf: PAGE_IS.PRESENT | PAGE_IS.SWAPPED, returned: PAGE_IS.PRESENT })) todo = cutOut(todo, r.start, r.end, now);
        }
      } finally {
        fs.closeSync(pm);
      }
      writeNow(pid, now, runOf, job.reader);
      const segs: Seg[] = [];
      for (const s of todo) {
        const { fd, off, vpid } = runOf(s);
        const end = s.vaddr + BigInt(s.nrPages) * PAGE;
        const last = segs[segs.length - 1];
        if (last && last.end === s.vaddr && last.fd === fd && last.off + Number(last.end - last.start) === off) last.end = end;
        else segs.push({ start: s.vaddr, end, fd, off, ...(vpid !== undefined ? { vpid } : {}) });
      }
      job.procs.push({ pid, uffd, ranges: registered, segs });
    }
  } catch (e) {
    for (const fd of job.files) fs.closeSync(fd);
    throw e;
  }
  opened.delete(ctx);
  return job;
}
