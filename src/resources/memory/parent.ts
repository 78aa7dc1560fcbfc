// The parent of an incremental dump or pre-dump (--prev-images-dir, relative
// to -D as in criu): what its images say of each process's pages, and its
// tracking record. Opened and checked before the tree is frozen.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { abi } from '../../sys';
import { StasisError, ErrorCodes } from '../../errors';
import { ImageReader } from '../../images/image';
import { checkDirTrust } from '../../images/dir';
import { openParents } from '../../images/chain';
import { PE } from '../../images/criu';
import { TRACK_FILE, parseTrack, type TrackRecord } from './track';
import { pagemapPages } from '../../images/pagemap';

const PAGE_SHIFT = 12n;

/** Sorted disjoint [first, end) page-number intervals. */
export type PageRanges = [number, number][];

export interface ParentImages {
  /** As given (the `parent` link's target: relative to -D). */
  link: string;
  dir: string;
  images: ImageReader;
  track: Map<number, TrackRecord>;
  /** parentPages' answers by process, read before the tree is frozen (openParentForDump). */
  pages: Map<number, PageRanges | undefined>;
}

const PAGEMAP_OF_PROCESS = /^pagemap-(\d+)\.img$/;

export function openParentForDump(dumpDir: string, prev: string): ParentImages {
  const dir = path.resolve(dumpDir, prev);
  let st: fs.Stats;
  try { st = fs.statSync(dir); } catch {
    throw new StasisError(ErrorCodes.USAGE, `--prev-images-dir ${prev}: ${dir} does not exist (it is relative to -D, as in criu)`);
  }
  if (!st.isDirectory()) throw new StasisError(ErrorCodes.USAGE, `--prev-images-dir ${prev}: ${dir} is not a directory`);
  checkDirTrust(dir, st);
  if (fs.existsSync(dumpDir) && fs.realpathSync(dir) === fs.realpathSync(dumpDir)) throw new StasisError(ErrorCodes.USAGE, `--prev-images-dir ${prev} is the images directory itself`);
  const images = new ImageReader(dir);
  if (!images.exists('inventory.img')) throw new StasisError(ErrorCodes.BAD_IMAGE, `--prev-images-dir ${prev}: ${dir} holds no complete pre-dump or dump (no inventory.img)`);
  // Its own chain must hold (files are verified by the restore, not here: that would cost a read of every page).
  openParents(dir, { verify: false });
  const track = images.exists(TRACK_FILE) ? parseTrack(images.path(TRACK_FILE), images.raw(TRACK_FILE)) : new Map<number, TrackRecord>();
  const parent: ParentImages = { link: prev, dir, images, track, pages: new Map() };
  // Every process's pages now, while the tree still runs: an incremental
  // parent's pagemap holds tens of thousands of entries (~40 ms to decode
  // per GiB of scattered writes), which the dump would otherwise read frozen.
  for (const name of fs.readdirSync(dir)) {
    const m = PAGEMAP_OF_PROCESS.exec(name);
    if (m) parent.pages.set(Number(m[1]), readParentPages(parent, name));
  }
  return parent;
}

/** Pages of process `vpid` the parent has (present there, or in its own parent); undefined: none. */
export function parentPages(p: ParentImages, vpid: number): PageRanges | undefined {
  if (p.pages.has(vpid)) return p.pages.get(vpid);
  const file = `pagemap-${vpid}.img`;
  return p.images.exists(file) ? readParentPages(p, file) : undefined;
}

function readParentPages(p: ParentImages, file: string): PageRanges {
  const pm = p.images.withHead(file, 'PAGEMAP', 'pagemap_head', 'pagemap_entry');
  const out: PageRanges = [];
  const where = p.images.path(file);
  for (const e of pm.entries) {
    const flags = e.flags ?? PE.PRESENT;
    const nr = pagemapPages(e, where);
    if (!(flags & (PE.PRESENT | PE.PARENT)) || nr <= 0) continue;
    const first = Number(e.vaddr >> PAGE_SHIFT);
    const last = out[out.length - 1];
    if (last && first < last[1]) throw new StasisError(ErrorCodes.BAD_IMAGE, `${p.images.path(file)}: entries out of order`);
    if (last && last[1] === first) last[1] += nr;
    else out.push([first, first + nr]);
  }
  return out;
}

/** The parent's pages `within` inside a VMA's pages [vmaFirst, vmaEnd), less the `written` ones: what the dump takes from the parent. */
export function fromParent(within: PageRanges, vmaFirst: number, vmaEnd: number, written: [bigint, bigint][]): PageRanges {
  const out: PageRanges = [];
  const w = written.map(([s, e]) => [Number(s >> PAGE_SHIFT), Number((e + BigInt(abi.PAGE_SIZE) - 1n) >> PAGE_SHIFT)] as [number, number]);
  let wi = 0;
  // The first range that may reach the VMA (binary search: a parent's pagemap may be long).
  let lo = 0, hi = within.length;
  while (lo < hi) { const mid = (lo + hi) >> 1; if (within[mid][1] <= vmaFirst) lo = mid + 1; else hi = mid; }
  for (let i = lo; i < within.length && within[i][0] < vmaEnd; i++) {
    const [s0, e0] = within[i];
    let s = Math.max(s0, vmaFirst);
    const e = Math.min(e0, vmaEnd);
    if (s >= e) continue;
    while (wi < w.length && w[wi][1] <= s) wi++;
    for (let k = wi; k < w.length && w[k][0] < e && s < e; k++) {
      if (w[k][0] > s) out.push([s, w[k][0]]);
      s = Math.max(s, w[k][1]);
    }
    if (s < e) out.push([s, e]);
  }
  return out;
}
