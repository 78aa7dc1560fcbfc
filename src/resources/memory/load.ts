// Loading an address space's images, checked before anything is created:
// VMAs aligned, ordered, disjoint and of kinds we restore; the files they map
// present (with their dumped size); pagemap entries inside VMAs and inside
// pages-N.img.
import { abi } from '../../sys';
import type { Msg } from '../../images/schema';
import { VMA, PE, FD_TYPES } from '../../images/criu';
import { StasisError, ErrorCodes } from '../../errors';
import type { Loading } from '../../unit/checkpoint';
import type { ImageReader } from '../../images/image';
import { openParents, type ChainLink } from '../../images/chain';
import { filesUnit } from '../files';
import { checkRegFile, isGhost } from '../regfile';
import { namespacesUnit } from '../ns/namespaces';
import { pagemapPages } from '../../images/pagemap';
import { isLazyVma } from './lazy';
import { splitGuards, type Range } from './guards';

const PAGE = BigInt(abi.PAGE_SIZE);

export interface PagemapRun { vaddr: bigint; nrPages: number; flags: number }

/** Where pages to restore are: a run of pages of a pages file (of this checkpoint or of a parent). */
export interface PageSource {
  vaddr: bigint; nrPages: number; images: ImageReader; pagesFile: string; fileOff: number;
  /** Post-copy: not in pagesFile but on the source's lazy pages server, as process `remote` (its pid in the images). */
  remote?: number;
}

export interface LoadedMm {
  mm: Msg<'mm_entry'>;
  /** pagemap entries in file order (= order of their pages in pagesFile); PE_PARENT ones have their pages in a parent. */
  pagemap: PagemapRun[];
  pagesFile: string;
  /** Every page to restore and where it is, in address order (PE_PARENT entries resolved along the chain). */
  sources: PageSource[];
  /** Guard page ranges (listed among the VMAs in the image, taken out of mm.vmas). */
  guards: Range[];
}

function bad(file: string, msg: string): StasisError {
  return new StasisError(ErrorCodes.BAD_IMAGE, `${file}: ${msg}`);
}

function checkVmas(file: string, vmas: Msg<'vma_entry'>[], files: ReadonlyMap<number, Msg<'file_entry'>>, aios: Msg<'aio_ring_entry'>[] = []): void {
  for (const a of aios) {
    const v = vmas.find((x) => x.start === a.id);
    if (!v || !(v.status & VMA.AREA_AIORING) || v.end - v.start !== BigInt(a.ring_len) || a.ring_len % Number(PAGE) !== 0) throw bad(file, `AIO ring at ${a.id.toString(16)} (${a.ring_len} bytes) is not an AIO ring VMA of that size`);
  }
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
    } else if (v.status & VMA.AREA_AIORING) {
      if (!aios.some((a) => a.id === v.start)) throw bad(file, `${range}: an AIO ring without its aio_ring_entry`);
    } else if (v.status & (VMA.AREA_SYSVIPC | VMA.AREA_SOCKET)) {
      throw bad(file, `${range}: unsupported mapping kind (status 0x${v.status.toString(16)})`);
    }
  }
}

/**
 * A PE_LAZY entry without PE_PRESENT (dump --lazy-pages): its pages are on the
 * source's server, fetched by a lazy restore from it; it must lie in one lazy
 * VMA (what the restore leaves to the lazy server).
 */
function lazyOnServer(ld: Loading, file: string, e: PagemapRun, vmas: Msg<'vma_entry'>[]): void {
  const at = e.vaddr.toString(16);
  if (!ld.opts.lazyRemote) throw bad(file, `entry at ${at}: its pages are on the dump's lazy pages server (dump --lazy-pages): restore with --lazy-pages --page-server --address A --port N`);
  const end = e.vaddr + BigInt(e.nrPages) * PAGE;
  const v = vmas.find((x) => x.start <= e.vaddr && end <= x.end);
  if (!v || !isLazyVma(v)) throw bad(file, `lazy entry at ${at} is not inside one private anonymous VMA`);
}

function checkPagemap(ld: Loading, file: string, pagesFile: string, entries: PagemapRun[], vmas: Msg<'vma_entry'>[]): void {
  let pages = 0;
  let vi = 0;
  let prevEnd = 0n;
  for (const e of entries) {
    if (e.vaddr % PAGE !== 0n) throw bad(file, `entry at ${e.vaddr.toString(16)} is not page-aligned`);
    if (e.flags & PE.LAZY && !(e.flags & PE.PRESENT)) lazyOnServer(ld, file, e, vmas);
    else if (!(e.flags & (PE.PRESENT | PE.PARENT))) throw bad(file, `entry at ${e.vaddr.toString(16)} is neither present nor in the parent (flags ${e.flags})`);
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
    if (e.flags & PE.PRESENT) pages += e.nrPages;
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
    const { vmas, guards } = splitGuards(mm.vmas ?? [], (msg) => bad(ld.images.path(mmFile), msg));
    mm.vmas = vmas;
    checkVmas(ld.images.path(mmFile), vmas, files, mm.aios ?? []);
    if (mm.exe_file_id && files.get(mm.exe_file_id)?.type !== FD_TYPES.REG) throw bad(ld.images.path(mmFile), `exe file id ${mm.exe_file_id} is not a regular file of files.img`);
    const pmFile = `pagemap-${p.pid}.img`;
    const pm = ld.images.withHead(pmFile, 'PAGEMAP', 'pagemap_head', 'pagemap_entry');
    const pagesFile = `pages-${pm.head.pages_id}.img`;
    const pmPath = ld.images.path(pmFile);
    const pagemap = pm.entries.map((e) => ({ vaddr: e.vaddr, nrPages: pagemapPages(e, pmPath), flags: e.flags ?? PE.PRESENT }));
    checkPagemap(ld, pmPath, pagesFile, pagemap, mm.vmas ?? []);
    out.set(p.pid, { mm, pagemap, pagesFile, sources: pageSources(ld, p.pid, { images: ld.images, pagesFile, runs: pagemap }), guards });
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
      // Ghosts (deleted files) are made by the restore itself.
      if (!(v.status & (VMA.FILE_PRIVATE | VMA.FILE_SHARED)) || v.status & VMA.AREA_MEMFD || isGhost(ld, Number(v.shmid))) continue;
      checkRegFile(files.get(Number(v.shmid))!.reg!, `${where}: VMA ${v.start.toString(16)}-${v.end.toString(16)}`, ld.opts.skipFileCheck ?? false);
    }
    if (m.mm.exe_file_id) checkRegFile(files.get(m.mm.exe_file_id)!.reg!, `${where}: exe`, true);
  }
}

// ---------------------------------------------------------------- parents

/** A pagemap of one process in one directory. */
interface Pagemap { images: ImageReader; pagesFile: string; runs: PagemapRun[]; offs?: number[] }

/** File offset of each run's pages (PE_PARENT runs have none in the file). */
function offsets(pm: Pagemap): number[] {
  if (!pm.offs) {
    let off = 0;
    pm.offs = pm.runs.map((e) => { const o = off; if (e.flags & PE.PRESENT) off += e.nrPages * abi.PAGE_SIZE; return o; });
  }
  return pm.offs;
}

const chains = new WeakMap<Loading, { links: ChainLink[]; maps: Map<string, Pagemap | null> }>();

/** The checkpoint's parents, opened and checked (verified too when the checkpoint was) on first need. */
function chainOf(ld: Loading): { links: ChainLink[]; maps: Map<string, Pagemap | null> } {
  let c = chains.get(ld);
  if (!c) {
    c = { links: openParents(ld.dir, { anyOwner: ld.opts.anyOwner, verify: ld.opts.listing !== undefined, deferChunks: ld.opts.listing?.deferred !== undefined }), maps: new Map() };
    chains.set(ld, c);
  }
  return c;
}

/** pagemap-PID.img of parent `level` (checked: aligned, ordered, inside its pages file), null if it has none. */
function parentPagemap(ld: Loading, level: number, pid: number): Pagemap | null {
  const c = chainOf(ld);
  const key = `${level}:${pid}`;
  if (c.maps.has(key)) return c.maps.get(key)!;
  const { images } = c.links[level];
  const file = `pagemap-${pid}.img`;
  let pm: Pagemap | null = null;
  if (images.exists(file)) {
    const where = images.path(file);
    const r = images.withHead(file, 'PAGEMAP', 'pagemap_head', 'pagemap_entry');
    const runs = r.entries.map((e) => ({ vaddr: e.vaddr, nrPages: pagemapPages(e, where), flags: e.flags ?? PE.PRESENT }));
    let prevEnd = 0n;
    let pages = 0;
    for (const e of runs) {
      if (e.vaddr % PAGE !== 0n || e.vaddr < prevEnd || e.nrPages <= 0) throw bad(where, `entry at ${e.vaddr.toString(16)} is unaligned, empty, out of order or overlapping`);
      if ((e.flags & PE.LAZY && !(e.flags & PE.PRESENT)) || !(e.flags & (PE.PRESENT | PE.PARENT))) throw bad(where, `entry at ${e.vaddr.toString(16)}: flags ${e.flags} not supported`);
      prevEnd = e.vaddr + BigInt(e.nrPages) * PAGE;
      if (e.flags & PE.PRESENT) pages += e.nrPages;
    }
    const pagesFile = `pages-${r.head.pages_id}.img`;
    const size = pages > 0 ? images.size(pagesFile) : 0;
    if (size < pages * abi.PAGE_SIZE) throw bad(where, `names ${pages} pages but ${pagesFile} holds only ${Math.floor(size / abi.PAGE_SIZE)}`);
    pm = { images, pagesFile, runs };
  }
  c.maps.set(key, pm);
  return pm;
}

/** Where each page of a pagemap (within [from, to) if given) is: its own pages file, or (PE_PARENT) the chain of parents. */
function pageSources(ld: Loading, pid: number, pm: Pagemap, level = -1, from?: bigint, to?: bigint): PageSource[] {
  const out: PageSource[] = [];
  const offs = offsets(pm);
  // The first run that may reach `from` (a parent's pagemap may be long).
  let lo = 0, hi = pm.runs.length;
  if (from !== undefined) {
    while (lo < hi) { const mid = (lo + hi) >> 1; const r = pm.runs[mid]; if (r.vaddr + BigInt(r.nrPages) * PAGE <= from) lo = mid + 1; else hi = mid; }
  }
  let covered = from;
  for (let i = lo; i < pm.runs.length; i++) {
    const e = pm.runs[i];
    if (to !== undefined && e.vaddr >= to) break;
    const len = BigInt(e.nrPages) * PAGE;
    const s = from !== undefined && e.vaddr < from ? from : e.vaddr;
    const end = to !== undefined && e.vaddr + len > to ? to : e.vaddr + len;
    if (from !== undefined && s > covered!) break; // a hole in what the parent must have: reported below
    if (e.flags & PE.PRESENT) {
      out.push({ vaddr: s, nrPages: Number((end - s) / PAGE), images: pm.images, pagesFile: pm.pagesFile, fileOff: offs[i] + Number(s - e.vaddr) });
    } else if (e.flags & PE.LAZY) {
      out.push({ vaddr: s, nrPages: Number((end - s) / PAGE), images: pm.images, pagesFile: pm.pagesFile, fileOff: -1, remote: pid });
    } else {
      out.push(...inParent(ld, pid, level + 1, s, end, pm));
    }
    covered = end;
  }
  if (from !== undefined && covered !== to) {
    throw bad(pm.images.path(`pagemap-${pid}.img`), `pages ${(covered ?? from).toString(16)}-${to!.toString(16)} of pid ${pid} are said to be in this parent, which does not have them`);
  }
  return out;
}

/** Pages [s, end) of `pid`, to be found in parent `level`. */
function inParent(ld: Loading, pid: number, level: number, s: bigint, end: bigint, child: Pagemap): PageSource[] {
  const where = child.images.path(`pagemap-${pid}.img`);
  const { links } = chainOf(ld);
  if (level >= links.length) throw bad(where, `pages ${s.toString(16)}-${end.toString(16)} are in the parent images, but ${child.images.dir} has no parent link`);
  const pm = parentPagemap(ld, level, pid);
  if (!pm) throw bad(where, `pages ${s.toString(16)}-${end.toString(16)} are in the parent images, but ${links[level].dir} has no pagemap-${pid}.img`);
  return pageSources(ld, pid, pm, level, s, end);
}
