// Reading images back: the fixtures' byte pattern, dumped memory (pagemap and
// pages), tampering with images, and crit.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { ImageReader, writeImageFile, type MsgName, type Msg, type Part } from '../../src/images/image';
import type { ImageKind } from '../../src/images/magic';

export const PAGE = 4096;
const PE_PARENT = 1;

/** The fixtures' byte pattern: same function as fx_pat in fixtures/fixture.h. */
export function patternByte(seed: number, i: number): number {
  return ((((Math.imul(i, 0x9e3779b1) ^ Math.imul(seed, 40503) ^ (i >>> 12)) >>> 8) & 0xff) | 1);
}

export function pattern(seed: number, len: number, from = 0): Buffer {
  const b = Buffer.alloc(len);
  for (let i = 0; i < len; i++) b[i] = patternByte(seed, from + i);
  return b;
}

export interface PagemapEntry {
  vaddr: bigint;
  nrPages: number;
  flags: number;
  /** Offset of this entry's first page in pages-N.img. */
  offset: number;
}

export interface DumpedMemory {
  pagesId: number;
  entries: PagemapEntry[];
  pages: Buffer;
}

/** pagemap-PID.img (through the library's reader) and its pages-N.img. */
export function loadDumpedMemory(dir: string, pid: number): DumpedMemory {
  const raw = new ImageReader(dir, null).withHead(`pagemap-${pid}.img`, 'PAGEMAP', 'pagemap_head', 'pagemap_entry');
  const pagesId = raw.head.pages_id;
  let offset = 0;
  const entries: PagemapEntry[] = raw.entries.map((e) => {
    const pe = { vaddr: e.vaddr, nrPages: e.nr_pages, flags: e.flags ?? 0, offset };
    // PE_PARENT entries (incremental dumps) have their pages in the parent's images.
    if (!(pe.flags & PE_PARENT)) offset += pe.nrPages * PAGE;
    return pe;
  });
  const pages = fs.readFileSync(path.join(dir, `pages-${pagesId}.img`));
  if (pages.length !== offset) throw new Error(`pages-${pagesId}.img has ${pages.length} bytes; pagemap says ${offset}`);
  return { pagesId, entries, pages };
}

/** The bytes [addr, addr+len) as dumped; throws if some page is not in the image. */
export function dumpedBytes(mem: DumpedMemory, addr: bigint, len: number): Buffer {
  const out = Buffer.alloc(len);
  let done = 0;
  while (done < len) {
    const a = addr + BigInt(done);
    const e = mem.entries.find((x) => x.vaddr <= a && a < x.vaddr + BigInt(x.nrPages * PAGE));
    if (!e) throw new Error(`address 0x${a.toString(16)} is not in the dump`);
    const within = Number(a - e.vaddr);
    const n = Math.min(len - done, e.nrPages * PAGE - within);
    mem.pages.copy(out, done, e.offset + within, e.offset + within + n);
    done += n;
  }
  return out;
}

/** Pagemap entries overlapping [start, end). */
export function entriesIn(mem: DumpedMemory, start: bigint, end: bigint): PagemapEntry[] {
  return mem.entries.filter((e) => e.vaddr < end && start < e.vaddr + BigInt(e.nrPages * PAGE));
}

/** Replace an image file with new contents (tests that tamper with images). */
export function rewriteImage(dir: string, file: string, kind: ImageKind, list: Part[]): void {
  fs.rmSync(path.join(dir, file), { force: true });
  writeImageFile(path.join(dir, file), kind, list);
}

/** Entries of an image each followed by raw bytes, as entry + `extra`. */
export function readWithPayloads<N extends MsgName>(dir: string, file: string, kind: ImageKind, msg: N, len: (e: Msg<N>) => number): (Msg<N> & { extra: Buffer })[] {
  return new ImageReader(dir, null).withPayloads(file, kind, msg, len).map((x) => ({ ...x.entry, extra: x.payload }));
}

/** Run crit; throws with its stderr if it fails or is missing. */
export function crit(args: string[]): string {
  const r = spawnSync('crit', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 256 << 20 });
  if (r.error) throw new Error(`cannot run crit (Debian package criu): ${r.error.message}`);
  if (r.status !== 0) throw new Error(`crit ${args.join(' ')} failed (status ${r.status}):\n${r.stderr}`);
  return r.stdout;
}
