// pagemap-PID.img written fast. An incremental dump's pagemap has an entry per
// run of copied pages and per run of pages in the parent, alternating: tens
// of thousands for a big process, which the generic encoder (bigint varints,
// a Buffer per entry) takes hundreds of milliseconds over while the tree is
// frozen. Same bytes as encodeImage('PAGEMAP', ...) (a unit test compares):
// the field numbers come from the schema.
import { SCHEMA, type Msg } from './schema';
import { encodeImage } from './image';
import { StasisError, ErrorCodes } from '../errors';

const F = SCHEMA.messages.pagemap_entry;
const num = (spec: string) => Number(spec.split(' ')[2]);
const WIRE_VARINT = 0;
const TAG_VADDR = (num(F.vaddr) << 3) | WIRE_VARINT;
const TAG_NR_PAGES = (num(F.nr_pages) << 3) | WIRE_VARINT;
const TAG_FLAGS = (num(F.flags) << 3) | WIRE_VARINT;
/** An entry's length prefix, and at most three tags and varints of 64 bits. */
const MAX_ENTRY = 4 + 3 * 11;

/** A varint of a non-negative integer below 2^53 at `at`; returns the next offset. */
function varint(b: Buffer, at: number, v: number): number {
  if (v >= 0x80000000) {
    // Low 28 bits (four groups of 7) in integer arithmetic, then the rest.
    let lo = v % 0x10000000;
    v = (v - lo) / 0x10000000;
    for (let i = 0; i < 4; i++) { b[at++] = (lo & 0x7f) | 0x80; lo >>>= 7; }
  }
  while (v >= 0x80) { b[at++] = (v & 0x7f) | 0x80; v >>>= 7; }
  b[at++] = v;
  return at;
}

/** The whole pagemap-PID.img: head naming pages-`pagesId`.img, then the entries. */
export function encodePagemap(pagesId: number, entries: Msg<'pagemap_entry'>[]): Buffer {
  const headPart = { msg: 'pagemap_head' as const, entry: { pages_id: pagesId } };
  // What the fast path does not write (never made by stasis): the generic encoder.
  if (entries.some((e) => e.in_parent !== undefined || e.nr_pages64 !== undefined || e.vaddr >= 1n << 53n || e.vaddr < 0n)) {
    return encodeImage('PAGEMAP', [headPart, ...entries.map((entry) => ({ msg: 'pagemap_entry' as const, entry }))]);
  }
  const head = encodeImage('PAGEMAP', [headPart]);
  const b = Buffer.allocUnsafe(head.length + entries.length * MAX_ENTRY);
  head.copy(b);
  let at = head.length;
  for (const e of entries) {
    const start = at;
    at += 4;
    b[at++] = TAG_VADDR;
    at = varint(b, at, Number(e.vaddr));
    b[at++] = TAG_NR_PAGES;
    at = varint(b, at, e.nr_pages);
    if (e.flags !== undefined) {
      b[at++] = TAG_FLAGS;
      at = varint(b, at, e.flags);
    }
    b.writeUInt32LE(at - start - 4, start);
  }
  return b.subarray(0, at);
}

/**
 * An entry's page count: CRIU 4.x writes it in field 5 (uint64, with field 2
 * left 0), older CRIUs and stasis in field 2 (criu reads field 2 when 5 is
 * absent). A count beyond what a 64-bit address space holds is refused.
 */
export function pagemapPages(e: Msg<'pagemap_entry'>, where: string): number {
  if (e.nr_pages64 === undefined) return e.nr_pages;
  if (e.nr_pages64 > MAX_PAGES) throw new StasisError(ErrorCodes.BAD_IMAGE, `${where}: entry at ${e.vaddr.toString(16)} counts ${e.nr_pages64} pages`);
  return Number(e.nr_pages64);
}
const MAX_PAGES = 1n << 52n;
