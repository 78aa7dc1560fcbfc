// Memory: mm-PID.img (mm fields, auxv, VMAs), pagemap-PID.img and pages-N.img.
//
// Which pages go into the image: present (or swapped) pages of private
// anonymous, heap and stack mappings; the anonymous (dirtied, copied-on-write)
// pages of private file mappings; present pages of shared anonymous mappings.
// Never shared file mappings (their contents live in the file), never
// [vdso]/[vvar]/[vsyscall]. All-zero pages of anonymous mappings are left out:
// a fresh anonymous mapping reads as zero anyway.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { abi, processVmReadv } from '../sys';
import { readMaps, readAuxv, readPagemap, PM_PRESENT, PM_SWAP, PM_FILE, type Vma } from '../proc/proc';
import { writeImage, IMAGE_MODE, type Entry, type Decoded } from '../images/image';
import type { DumpCtx, ProcessDump } from '../dump/context';
import { StasisError, ErrorCodes } from '../errors';
import { regFileEntry } from './regfile';
import { dumpMemfdInode, memfdFileId, memfdKind } from './memfd';

const { MAP, PAGE_SIZE } = abi;
const PROT_WRITE = abi.PROT.WRITE;

/** vma_entry.status bits (CRIU's VMA_AREA_* / VMA_* flags). */
export const VMA = {
  AREA_REGULAR: 1 << 0, AREA_STACK: 1 << 1, AREA_VSYSCALL: 1 << 2, AREA_VDSO: 1 << 3, AREA_HEAP: 1 << 5,
  FILE_PRIVATE: 1 << 6, FILE_SHARED: 1 << 7, ANON_SHARED: 1 << 8, ANON_PRIVATE: 1 << 9, AREA_SYSVIPC: 1 << 10,
  AREA_SOCKET: 1 << 11, AREA_VVAR: 1 << 12, AREA_AIORING: 1 << 13, AREA_MEMFD: 1 << 14,
} as const;

/** pagemap_entry.flags */
export const PE = { PARENT: 1, LAZY: 2, PRESENT: 4 } as const;

export type PagePolicy = 'none' | 'anon' | 'cow-copies' | 'shared-anon';

export interface ClassifiedVma {
  vma: Vma;
  status: number;
  flags: number;
  policy: PagePolicy;
  /** Path of the backing file for file mappings. */
  file?: string;
  memfd?: boolean;
}

export function classify(v: Vma): ClassifiedVma {
  const base = { vma: v };
  switch (v.path) {
    case '[vsyscall]': return { ...base, status: VMA.AREA_VSYSCALL, flags: MAP.PRIVATE | MAP.ANONYMOUS, policy: 'none' };
    case '[vdso]': return { ...base, status: VMA.AREA_REGULAR | VMA.AREA_VDSO, flags: MAP.PRIVATE | MAP.ANONYMOUS, policy: 'none' };
    case '[vvar]':
    case '[vvar_vclock]': return { ...base, status: VMA.AREA_REGULAR | VMA.AREA_VVAR, flags: MAP.PRIVATE | MAP.ANONYMOUS, policy: 'none' };
    case '[heap]': return { ...base, status: VMA.AREA_REGULAR | VMA.AREA_HEAP | VMA.ANON_PRIVATE, flags: MAP.PRIVATE | MAP.ANONYMOUS, policy: 'anon' };
    case '[stack]': return { ...base, status: VMA.AREA_REGULAR | VMA.AREA_STACK | VMA.ANON_PRIVATE, flags: MAP.PRIVATE | MAP.ANONYMOUS | MAP.GROWSDOWN, policy: 'anon' };
  }
  if (v.path === '' || (v.path.startsWith('[') && v.inode === 0)) {
    if (v.shared) throw unsupported(v, 'shared anonymous mapping without a backing object');
    return { ...base, status: VMA.AREA_REGULAR | VMA.ANON_PRIVATE, flags: MAP.PRIVATE | MAP.ANONYMOUS, policy: 'anon' };
  }
  // MAP_SHARED|MAP_ANONYMOUS shows as the deleted /dev/zero shmem file.
  if (v.path === '/dev/zero' && v.deleted) {
    if (v.shared) return { ...base, status: VMA.AREA_REGULAR | VMA.ANON_SHARED, flags: MAP.SHARED | MAP.ANONYMOUS, policy: 'shared-anon' };
    return { ...base, status: VMA.AREA_REGULAR | VMA.ANON_PRIVATE, flags: MAP.PRIVATE | MAP.ANONYMOUS, policy: 'anon' };
  }
  if (v.path.startsWith('/SYSV')) throw unsupported(v, 'System V shared memory');
  if (v.path.startsWith('/memfd:')) {
    // Shared: the contents live in the memfd (dumped with its inode); private: only the copies.
    const kind = v.shared ? VMA.FILE_SHARED : VMA.FILE_PRIVATE;
    return { ...base, status: VMA.AREA_REGULAR | VMA.AREA_MEMFD | kind, flags: v.shared ? MAP.SHARED : MAP.PRIVATE, policy: v.shared ? 'none' : 'cow-copies', memfd: true };
  }
  if (v.deleted) throw unsupported(v, `mapping of a deleted file (${v.path})`);
  if (!v.path.startsWith('/')) throw unsupported(v, `mapping of ${v.path}`);
  if (v.shared) return { ...base, status: VMA.AREA_REGULAR | VMA.FILE_SHARED, flags: MAP.SHARED, policy: 'none', file: v.path };
  return { ...base, status: VMA.AREA_REGULAR | VMA.FILE_PRIVATE, flags: MAP.PRIVATE, policy: 'cow-copies', file: v.path };
}

function unsupported(v: Vma, what: string): StasisError {
  return new StasisError(ErrorCodes.UNSUPPORTED, `VMA ${v.start.toString(16)}-${v.end.toString(16)}: ${what} is not supported yet`);
}

/** madvise() advice that shows in smaps VmFlags (two-letter names), as criu keeps it in vma_entry.madv. */
const MADV_OF_VMFLAG: Record<string, number> = {
  rr: 1 /* RANDOM */, sr: 2 /* SEQUENTIAL */, dc: 10 /* DONTFORK */, mg: 12 /* MERGEABLE */, hg: 14 /* HUGEPAGE */,
  nh: 15 /* NOHUGEPAGE */, dd: 16 /* DONTDUMP */, wf: 18 /* WIPEONFORK */,
};

/** VmFlags of every VMA (smaps), by start address. */
function readVmFlags(pid: number): Map<bigint, string[]> {
  const out = new Map<bigint, string[]>();
  let cur = -1n;
  for (const line of fs.readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
    const m = /^([0-9a-f]+)-[0-9a-f]+ /.exec(line);
    if (m) cur = BigInt('0x' + m[1]);
    else if (line.startsWith('VmFlags:')) out.set(cur, line.slice(8).trim().split(/\s+/));
  }
  return out;
}

/** Which pages of this VMA go into the image, per its pagemap words. */
function wanted(policy: PagePolicy, pm: bigint): boolean {
  if (policy === 'none') return false;
  // A private file page that was written is an anonymous copy; swapped ones too.
  if (policy === 'cow-copies') return ((pm & PM_PRESENT) !== 0n && (pm & PM_FILE) === 0n) || (pm & PM_SWAP) !== 0n;
  return (pm & (PM_PRESENT | PM_SWAP)) !== 0n;
}

const CHUNK_PAGES = 4096; // 16 MiB of data, 32 KiB of pagemap per chunk
const ZERO_PAGE = Buffer.alloc(PAGE_SIZE);

// Reused across processes and dumps: a 16 MiB buffer per call costs a
// zero-fill and garbage collection while the task is frozen.
let chunkBufs: { pmBuf: Buffer; data: Buffer } | undefined;
function chunkBuffers(): { pmBuf: Buffer; data: Buffer } {
  return (chunkBufs ??= { pmBuf: Buffer.allocUnsafe(CHUNK_PAGES * 8), data: Buffer.allocUnsafe(CHUNK_PAGES * PAGE_SIZE) });
}

function isZeroPage(buf: Buffer, off: number): boolean {
  // Most non-zero pages differ in their first word: check it before memcmp.
  if (buf.readBigUInt64LE(off) !== 0n) return false;
  return buf.compare(ZERO_PAGE, 0, PAGE_SIZE, off, off + PAGE_SIZE) === 0;
}

/**
 * Dump the address space of a frozen process. Needs the brk from the
 * parasite (pd.parasite.brk) and registers mapped files as file entries.
 */
export function dumpMemory(ctx: DumpCtx, pd: ProcessDump): void {
  const pid = pd.pid;
  const vmas = readMaps(pid).map(classify);
  const dir = ctx.opts.dir;
  const pagesFile = `pages-${pd.pagesId}.img`;
  const pagemap: [ 'pagemap_head' | 'pagemap_entry', Entry][] = [['pagemap_head', { pages_id: pd.pagesId }]];
  const pmFd = fs.openSync(`/proc/${pid}/pagemap`, 'r');
  const memFd = fs.openSync(`/proc/${pid}/mem`, 'r');
  // No O_TRUNC: truncating an old pages file first costs more than writing
  // (its cached pages are freed, then new ones allocated); it is overwritten in
  // place and cut to size at the end.
  const outFd = fs.openSync(path.join(dir, pagesFile), fs.constants.O_WRONLY | fs.constants.O_CREAT, IMAGE_MODE);
  const { pmBuf, data } = chunkBuffers();
  let written = 0;
  try {
    fs.fchmodSync(outFd, IMAGE_MODE);
    for (const cv of vmas) {
      if (cv.policy === 'none') continue;
      const skipZero = cv.policy === 'anon';
      for (let chunk = cv.vma.start; chunk < cv.vma.end; chunk += BigInt(CHUNK_PAGES * PAGE_SIZE)) {
        const chunkEnd = chunk + BigInt(CHUNK_PAGES * PAGE_SIZE) < cv.vma.end ? chunk + BigInt(CHUNK_PAGES * PAGE_SIZE) : cv.vma.end;
        const pm = readPagemap(pmFd, chunk, chunkEnd, pmBuf);
        const n = pm.length / 8;
        // Runs of wanted pages, read in one go each: process_vm_readv where the
        // task may read (faster), /proc/PID/mem otherwise (it reads PROT_NONE
        // and write-only pages too).
        let i = 0;
        while (i < n) {
          if (!wanted(cv.policy, pm.readBigUInt64LE(i * 8))) { i++; continue; }
          let j = i + 1;
          while (j < n && wanted(cv.policy, pm.readBigUInt64LE(j * 8))) j++;
          const runStart = chunk + BigInt(i * PAGE_SIZE);
          const len = (j - i) * PAGE_SIZE;
          let got = -1;
          if (cv.vma.prot & abi.PROT.READ) {
            try { got = processVmReadv(pid, runStart, data, len); } catch { got = -1; }
          }
          if (got !== len) got = fs.readSync(memFd, data, 0, len, Number(runStart));
          if (got !== len) throw new StasisError(ErrorCodes.UNSUPPORTED, `short read of ${len} bytes at ${runStart.toString(16)} in /proc/${pid}/mem`);
          // Emit sub-runs of non-zero pages.
          let k = 0;
          while (k < j - i) {
            if (skipZero && isZeroPage(data, k * PAGE_SIZE)) { k++; continue; }
            let m = k + 1;
            while (m < j - i && !(skipZero && isZeroPage(data, m * PAGE_SIZE))) m++;
            fs.writeSync(outFd, data, k * PAGE_SIZE, (m - k) * PAGE_SIZE, written);
            written += (m - k) * PAGE_SIZE;
            pagemap.push(['pagemap_entry', { vaddr: runStart + BigInt(k * PAGE_SIZE), nr_pages: m - k, flags: PE.PRESENT }]);
            ctx.pagesCount += m - k;
            ctx.pagesBytes += (m - k) * PAGE_SIZE;
            k = m;
          }
          i = j;
        }
      }
    }
    fs.ftruncateSync(outFd, written);
  } finally {
    fs.closeSync(outFd);
    fs.closeSync(memFd);
    fs.closeSync(pmFd);
  }
  writeImage(dir, `pagemap-${pid}.img`, 'PAGEMAP', pagemap);

  const vmFlags = readVmFlags(pid);
  const vmaEntries: Entry[] = vmas.map((cv) => {
    let shmid = 0n;
    if (cv.memfd) {
      const via = `/proc/${pid}/map_files/${cv.vma.start.toString(16)}-${cv.vma.end.toString(16)}`;
      dumpMemfdInode(ctx, cv.vma.inode, cv.vma.path, via);
      shmid = BigInt(memfdFileId(ctx, cv.vma.inode, cv.vma.shared && cv.vma.prot & 2 ? abi.O.RDWR : abi.O.RDONLY));
    } else if (cv.file) shmid = BigInt(regFileEntry(ctx, cv.file, cv.vma.shared ? 2 : 0));
    else if (cv.policy === 'shared-anon') shmid = BigInt(cv.vma.inode);
    const vf = vmFlags.get(cv.vma.start) ?? [];
    let madv = 0n;
    for (const f of vf) if (f in MADV_OF_VMFLAG) madv |= 1n << BigInt(MADV_OF_VMFLAG[f]);
    return {
      start: cv.vma.start, end: cv.vma.end, pgoff: cv.vma.pgoff, shmid, prot: cv.vma.prot,
      flags: cv.flags | (vf.includes('lo') ? MAP.LOCKED : 0), status: cv.status, fd: -1n, madv: madv || undefined,
    };
  });
  const st = pd.stat;
  let exeFileId = 0;
  try {
    exeFileId = regFileEntry(ctx, fs.readlinkSync(`/proc/${pid}/exe`), 0);
  } catch { /* no exe link (exited exe?): leave 0 */ }
  Object.assign(pd.mm, {
    mm_start_code: st.startCode, mm_end_code: st.endCode, mm_start_data: st.startData, mm_end_data: st.endData,
    mm_start_stack: st.startStack, mm_start_brk: st.startBrk, mm_brk: pd.parasite.brk,
    mm_arg_start: st.argStart, mm_arg_end: st.argEnd, mm_env_start: st.envStart, mm_env_end: st.envEnd,
    exe_file_id: exeFileId, mm_saved_auxv: readAuxv(pid), vmas: vmaEntries, dumpable: pd.parasite.dumpable,
  });
  writeImage(dir, `mm-${pid}.img`, 'MM', [['mm_entry', pd.mm]]);
}

// ---------------------------------------------------------------- restore

import type { RestoreCtx, TaskRestore } from '../restore/context';

const PAGE = BigInt(PAGE_SIZE);

function needsPages(tr: TaskRestore, start: bigint, end: bigint): boolean {
  return tr.img.pagemap.some((e) => e.vaddr < end && e.vaddr + BigInt(e.nrPages) * PAGE > start);
}

/**
 * Map every dumped VMA at its address, with its flags. VMAs that will get
 * pages are mapped writable first and put back to their protection after
 * the pages are in (see restoreProtections).
 */
export function restoreAddressSpace(ctx: RestoreCtx, tr: TaskRestore): void {
  const t = tr.task;
  for (const v of tr.img.mm.vmas as Decoded[]) {
    const status = v.status as number;
    if (status & (VMA.AREA_VDSO | VMA.AREA_VVAR | VMA.AREA_VSYSCALL)) continue; // moved with the stub / fixed
    const start = v.start as bigint, end = v.end as bigint, len = end - start;
    const fill = !(status & VMA.FILE_SHARED) && needsPages(tr, start, end);
    const prot = (v.prot as number) | (fill ? PROT_WRITE : 0);
    // Locking (mlock) comes after the pages are in: see restoreAdvice.
    const flags = ((v.flags as number) & ~(MAP.FIXED | MAP.LOCKED)) | MAP.FIXED_NOREPLACE;
    if (status & (VMA.FILE_PRIVATE | VMA.FILE_SHARED)) {
      const f = ctx.ckpt.files.get(Number(v.shmid))!;
      const writable = (status & VMA.FILE_SHARED) !== 0 && ((v.prot as number) & PROT_WRITE) !== 0;
      const fd = status & VMA.AREA_MEMFD ? memfdKind.open(ctx, tr, f.memfd) : t.open(f.reg.name, writable ? abi.O.RDWR : abi.O.RDONLY);
      try {
        t.call('mmap', start, len, prot, flags, fd, v.pgoff as bigint);
      } finally {
        t.call('close', fd);
      }
    } else {
      t.call('mmap', start, len, prot, flags | MAP.ANONYMOUS, -1, 0);
    }
    if (prot !== v.prot) tr.reprotect.push({ start, len, prot: v.prot as number });
  }
}

/** Fill pages from pages-N.img through /proc/PID/mem (works whatever the protection). */
export function restorePages(ctx: RestoreCtx, tr: TaskRestore): void {
  const pid = tr.task.pid;
  const pagesPath = path.join(ctx.opts.dir, tr.img.pagesFile);
  if (tr.img.pagemap.length === 0) return;
  const inFd = fs.openSync(pagesPath, 'r');
  const memFd = fs.openSync(`/proc/${pid}/mem`, 'r+');
  const buf = chunkBuffers().data;
  let fileOff = 0;
  try {
    for (const e of tr.img.pagemap) {
      // Fault big runs in with one call rather than a page fault per page.
      if (e.nrPages >= 16) tr.task.callRaw('madvise', e.vaddr, BigInt(e.nrPages) * PAGE, abi.MADV.POPULATE_WRITE);
      for (let done = 0; done < e.nrPages; ) {
        const n = Math.min(CHUNK_PAGES, e.nrPages - done);
        const len = n * PAGE_SIZE;
        const got = fs.readSync(inFd, buf, 0, len, fileOff);
        if (got !== len) throw new StasisError(ErrorCodes.BAD_IMAGE, `${pagesPath}: short read at offset ${fileOff}`);
        const wrote = fs.writeSync(memFd, buf, 0, len, Number(e.vaddr + BigInt(done) * PAGE));
        if (wrote !== len) throw new StasisError(ErrorCodes.RESTORE_FAILED, `short write of pages at ${(e.vaddr + BigInt(done) * PAGE).toString(16)}`);
        fileOff += len;
        done += n;
      }
    }
  } finally {
    fs.closeSync(memFd);
    fs.closeSync(inFd);
  }
}

export function restoreProtections(_ctx: RestoreCtx, tr: TaskRestore): void {
  for (const r of tr.reprotect) tr.task.call('mprotect', r.start, r.len, r.prot);
}

/** madvise() advice and mlock, on the final VMAs. */
export function restoreAdvice(_ctx: RestoreCtx, tr: TaskRestore): void {
  for (const v of tr.img.mm.vmas as Decoded[]) {
    const len = (v.end as bigint) - (v.start as bigint);
    const madv = BigInt(v.madv ?? 0n);
    for (let a = 0; a < 64; a++) if ((madv >> BigInt(a)) & 1n) tr.task.call('madvise', v.start, len, a);
    if ((v.flags as number) & MAP.LOCKED) tr.task.call('mlock', v.start, len);
  }
}

/** mm fields, auxv and exe link in one prctl(PR_SET_MM, PR_SET_MM_MAP). */
export function restoreMm(ctx: RestoreCtx, tr: TaskRestore): void {
  const mm = tr.img.mm;
  const t = tr.task;
  const { PRCTL_MM_MAP: L } = abi;
  const auxv: bigint[] = mm.mm_saved_auxv ?? [];
  const auxvBuf = Buffer.alloc(auxv.length * 8);
  auxv.forEach((w, i) => auxvBuf.writeBigUInt64LE(BigInt.asUintN(64, w), i * 8));
  const auxvAt = t.put(auxvBuf, 1024);
  let exeFd = -1;
  if (mm.exe_file_id) exeFd = t.open(ctx.ckpt.files.get(mm.exe_file_id)!.reg.name, abi.O.RDONLY);
  try {
    const m = Buffer.alloc(L.SIZE);
    const set = (off: number, v: bigint) => m.writeBigUInt64LE(BigInt.asUintN(64, BigInt(v)), off);
    set(L.start_code, mm.mm_start_code); set(L.end_code, mm.mm_end_code);
    set(L.start_data, mm.mm_start_data); set(L.end_data, mm.mm_end_data);
    set(L.start_brk, mm.mm_start_brk); set(L.brk, mm.mm_brk); set(L.start_stack, mm.mm_start_stack);
    set(L.arg_start, mm.mm_arg_start); set(L.arg_end, mm.mm_arg_end);
    set(L.env_start, mm.mm_env_start); set(L.env_end, mm.mm_env_end);
    set(L.auxv, auxvAt);
    m.writeUInt32LE(auxvBuf.length, L.auxv_size);
    m.writeInt32LE(exeFd, L.exe_fd);
    t.call('prctl', abi.PR.SET_MM, abi.PR_SET_MM.MAP, t.put(m, 0), L.SIZE, 0);
  } finally {
    if (exeFd >= 0) t.call('close', exeFd);
  }
  if (mm.dumpable !== undefined) t.call('prctl', abi.PR.SET_DUMPABLE, mm.dumpable);
}
