// Loading an address space's images, checked before anything is created:
// VMAs aligned, ordered, disjoint and of kinds we restore; the files they map
// present (with their dumped size); pagemap entries inside VMAs and inside
// pages-N.img.
import { abi } from '../../sys';
import type { Msg } from '../../images/schema';
import { VMA, PE, FD_TYPES } from '../../images/criu';
import { StasisError, ErrorCodes } from '../../errors';
import type { Loading } from '../../unit/checkpoint';
import { filesUnit } from '../files';
import { checkRegFile } from '../regfile';
import { namespacesUnit } from '../ns/namespaces';

const PAGE = BigInt(abi.PAGE_SIZE);

export interface PagemapRun { vaddr: bigint; nrPages: number; flags: number }

export interface LoadedMm {
  mm: Msg<'mm_entry'>;
  /** pagemap entries in file order (= order of their pages in pagesFile). */
  pagemap: PagemapRun[];
  pagesFile: string;
}

function bad(file: string, msg: string): StasisError {
  return new StasisError(ErrorCodes.BAD_IMAGE, `${file}: ${msg}`);
}

function checkVmas(file: string, vmas: Msg<'vma_entry'>[], files: ReadonlyMap<number, Msg<'file_entry'>>): void {
  let prevEnd = 0n;
  for (const v of vmas) {
    const range = `VMA ${v.start.toString(16)}-${v.end.toString(16)}`;
    if (v.start % PAGE !== 0n || v.end % PAGE !== 0n) throw bad(file, `${range} is not page-aligned`);
    if (v.end <= v.start) throw bad(file, `${range} is empty or inverted`);
    if (v.start < prevEnd) throw bad(file, `${range} overlaps the previous VMA`);
    prevEnd = v.end;
    if (v.status & (VMA.FILE_PRIVATE | VMA.FILE_SHARED)) {
      const f = files.get(Number(v.shmid));
      if (!f) throw bad(file, `${range} maps file id ${v.shmid}, absent from files.img`);
      const want = v.status & VMA.AREA_MEMFD ? FD_TYPES.MEMFD : FD_TYPES.REG;
      if (f.type !== want) throw bad(file, `${range}: file id ${v.shmid} is not a ${want === FD_TYPES.MEMFD ? 'memfd' : 'regular file'}`);
    } else if (v.status & (VMA.AREA_SYSVIPC | VMA.AREA_SOCKET | VMA.AREA_AIORING)) {
      throw bad(file, `${range}: unsupported mapping kind (status 0x${v.status.toString(16)})`);
    }
  }
}

function checkPagemap(ld: Loading, file: string, pagesFile: string, entries: PagemapRun[], vmas: Msg<'vma_entry'>[]): void {
  let pages = 0;
  let vi = 0;
  let prevEnd = 0n;
  for (const e of entries) {
    if (e.vaddr % PAGE !== 0n) throw bad(file, `entry at ${e.vaddr.toString(16)} is not page-aligned`);
    if (e.flags & (PE.PARENT | PE.LAZY)) throw bad(file, `entry at ${e.vaddr.toString(16)}: incremental/lazy pages are not supported`);
    if (e.vaddr < prevEnd) throw bad(file, `entry at ${e.vaddr.toString(16)} is out of order or overlaps the previous one`);
    const end = e.vaddr + BigInt(e.nrPages) * PAGE;
    prevEnd = end;
    // Entries are in address order: walk VMAs alongside.
    while (vi < vmas.length && vmas[vi].end <= e.vaddr) vi++;
    let covered = e.vaddr;
    for (let j = vi; j < vmas.length && vmas[j].start <= covered && covered < end; j++) covered = vmas[j].end;
    if (vi >= vmas.length || vmas[vi].start > e.vaddr || covered < end) {
      throw bad(file, `pages ${e.vaddr.toString(16)}-${end.toString(16)} lie outside every VMA`);
    }
    pages += e.nrPages;
  }
  // Opened as the restore will read it (no link, trusted owner): refused now, not half way.
  const size = pages > 0 || ld.images.exists(pagesFile) ? ld.images.size(pagesFile) : 0;
  if (size < pages * abi.PAGE_SIZE) throw bad(file, `names ${pages} pages but ${pagesFile} holds only ${Math.floor(size / abi.PAGE_SIZE)}`);
}

export function loadMemory(ld: Loading): Map<number, LoadedMm> {
  const { files } = ld.loaded(filesUnit);
  const out = new Map<number, LoadedMm>();
  for (const p of ld.processes) {
    const mmFile = `mm-${p.pid}.img`;
    const mm = ld.images.one(mmFile, 'MM', 'mm_entry');
    checkVmas(ld.images.path(mmFile), mm.vmas ?? [], files);
    if (mm.exe_file_id && files.get(mm.exe_file_id)?.type !== FD_TYPES.REG) throw bad(ld.images.path(mmFile), `exe file id ${mm.exe_file_id} is not a regular file of files.img`);
    const pmFile = `pagemap-${p.pid}.img`;
    const pm = ld.images.withHead(pmFile, 'PAGEMAP', 'pagemap_head', 'pagemap_entry');
    const pagesFile = `pages-${pm.head.pages_id}.img`;
    const pagemap = pm.entries.map((e) => ({ vaddr: e.vaddr, nrPages: e.nr_pages, flags: e.flags ?? PE.PRESENT }));
    checkPagemap(ld, ld.images.path(pmFile), pagesFile, pagemap, mm.vmas ?? []);
    out.set(p.pid, { mm, pagemap, pagesFile });
  }
  return out;
}

/** The files that mappings and exe links name must still be there, with their size. */
export function validateMemory(ld: Loading, l: Map<number, LoadedMm>): void {
  // Paths in a mount namespace of the tree's own are checked when mapped (restore.ts).
  if (ld.loaded(namespacesUnit).has('mnt')) return;
  const { files } = ld.loaded(filesUnit);
  for (const [pid, m] of l) {
    const where = ld.images.path(`mm-${pid}.img`);
    for (const v of m.mm.vmas ?? []) {
      if (!(v.status & (VMA.FILE_PRIVATE | VMA.FILE_SHARED)) || v.status & VMA.AREA_MEMFD) continue;
      checkRegFile(files.get(Number(v.shmid))!.reg!, `${where}: VMA ${v.start.toString(16)}-${v.end.toString(16)}`, ld.opts.skipFileCheck ?? false);
    }
    if (m.mm.exe_file_id) checkRegFile(files.get(m.mm.exe_file_id)!.reg!, `${where}: exe`, true);
  }
}
