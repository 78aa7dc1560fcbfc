// Integrity of a checkpoint. A dump writes the size and SHA-256 of every file
// of the checkpoint into DIGEST_FILE (not an .img: crit and criu ignore it);
// a restore verifies every listed file before anything is created and then
// reads no file the digest does not list. This catches bit rot, torn writes
// after a crash (the dump does not fsync) and edits of the images; not an
// attacker who can write the directory (who could rewrite the digest too:
// that is what the directory's owner and mode checks are for).
//
// The digest is a text file, canonical (one form for one content: sorted,
// no leading zeros, lower-case hex, one final newline), so that a change of
// any bit of it is refused too. Version 3:
//
//   stasis-digest 3 sha256 crc32
//   SIZE SHA256 NAME          a file hashed whole
//   SIZE crc32*CHUNK NAME     a file summed per chunk of CHUNK bytes (pages-*.img),
//    CRC32                    then one line per chunk (a space first, 8 hex digits),
//    ...                      in order: ceil(SIZE / CHUNK) of them, the last shorter
//   SIZE *CHUNK NAME          the same with a SHA-256 per chunk (version 2's form)
//
// Versions 1 (`stasis-digest 1 sha256`, whole lines only) and 2
// (`stasis-digest 2 sha256`: chunks by SHA-256 only) are still read.
//
// Why chunks: one SHA-256 stream is one core (~2 GB/s here with SHA-NI),
// which made the digest the bottleneck of a big dump and of a restore's
// check. A pages file's chunks are independent, so the dump sums them on
// a pool of threads (hash-pool.ts) while it goes on writing, the restore
// checks them the same way, and a lazy restore checks each chunk when it
// first reads from it (DeferredChunks), before any of it reaches the task.
//
// Why CRC-32 for pages (version 3): pages are nearly all of a big checkpoint,
// and SHA-256 of 1 GiB is ~0.5 s of CPU, more than its copy; on 2 cores it was
// the dump's tail (the commit waited ~240 ms for it) and ~300 ms of every
// restore's check, and under load it took the cores the copy needed. zlib's
// CRC-32 (carry-less multiply) sums 1 GiB in ~0.15 s. What the digest is for
// is bit rot, torn writes and stray edits (above: not an attacker), which a
// 32-bit CRC per 4 MiB catches as file systems' block checksums do (btrfs'
// crc32c, ZFS's fletcher4): any burst of up to 32 bits, else all but 1 in 2^32.
// The small files (every other image) and the digest's own pin in a chain
// stay SHA-256.
import * as fs from 'node:fs';
import * as crypto from 'node:crypto';
import { StasisError, ErrorCodes } from '../errors';
import { abi } from '../sys';
import { ImageReader, describeIoError } from './image';
import { HashPool, type ChunkResult } from './hash-pool';
import { chunkSum, sumChunk, CHUNK_ALG, ALG_NAME, type ChunkAlg, type ChunkSum } from './chunk-sum';

export { CHUNK_ALG, type ChunkAlg };

/** The digest's name in the images directory. */
import { DIGEST_FILE } from './digest-name';

export { DIGEST_FILE };
const HEADERS = { 1: 'stasis-digest 1 sha256', 2: 'stasis-digest 2 sha256', 3: 'stasis-digest 3 sha256 crc32' } as const;
export type DigestVersion = keyof typeof HEADERS;
const VERSIONS = new Map<string, DigestVersion>(Object.entries(HEADERS).map(([v, h]) => [h, Number(v) as DigestVersion]));
/** Names a checkpoint's files may have: no path, no leading dot (staging dirs), ASCII. */
const NAME_RE = /^[A-Za-z0-9_][A-Za-z0-9._-]*$/;
const NUM = '(0|[1-9][0-9]{0,15})';
const LINE_RE = new RegExp(`^${NUM} (?:([0-9a-f]{64})|(crc32)?\\*([1-9][0-9]{0,15})) (.+)$`);
const CHUNK_LINE_RE = { sha256: /^ ([0-9a-f]{64})$/, crc32: /^ ([0-9a-f]{8})$/ } as const;


/**
 * The chunk size of pages files: a lazy restore's first read in a chunk
 * hashes all of it (4 MiB: ~3 ms), and the dump's tail at commit is about one
 * chunk per thread; below ~1 MiB the per-job overhead and the digest's size
 * grow (a line per chunk). The lazy server streams in 1 MiB pieces (a chunk is hashed once, at its first).
 */
export const CHUNK_SIZE = 4 << 20;
/** Chunks of at most this (a multiple of the page size) are read. */
const MAX_CHUNK = 1 << 30;

/** A file hashed whole (`sha256`) or per chunk (`chunk` bytes each, their sums by `alg` in `chunks`). */
export interface DigestEntry { name: string; size: number; sha256?: string; chunk?: number; chunks?: string[]; alg?: ChunkAlg }
/** A parsed digest: its entries by file name; `deferred`: chunks a lazy restore checks as it reads them. */
export type DigestListing = ReadonlyMap<string, DigestEntry> & { deferred?: DeferredChunks };

function corrupt(msg: string): StasisError {
  return new StasisError(ErrorCodes.CORRUPT, msg);
}

export function sha256(data: Buffer): string {
  return crypto.createHash('sha256').update(data).digest('hex');
}

/** Number of chunks of a chunked entry. */
export function chunkCount(size: number, chunk: number): number {
  return Math.ceil(size / chunk);
}

function validChunk(chunk: number): boolean {
  return Number.isSafeInteger(chunk) && chunk > 0 && chunk <= MAX_CHUNK && chunk % abi.PAGE_SIZE === 0;
}

/** The digest file's bytes for `entries` (version 1 only for files hashed whole: tests of old checkpoints). */
export function formatDigest(entries: Iterable<DigestEntry>, version: DigestVersion = 3): Buffer {
  const sorted = [...entries].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const lines: string[] = [HEADERS[version]];
  for (const e of sorted) {
    if (e.chunks) {
      const alg = e.alg ?? 'sha256';
      if (version === 1 || (version === 2 && alg !== 'sha256')) throw new StasisError(ErrorCodes.INTERNAL, `${e.name}: a version ${version} digest has no ${alg} chunks`);
      lines.push(`${e.size} ${alg === 'crc32' ? 'crc32' : ''}*${e.chunk} ${e.name}`, ...e.chunks.map((c) => ` ${c}`));
    } else {
      lines.push(`${e.size} ${e.sha256} ${e.name}`);
    }
  }
  return Buffer.from(lines.join('\n') + '\n', 'latin1');
}

/** Parse a digest (version 1, 2 or 3) strictly; `where` (its path) names it in errors. */
export function parseDigest(where: string, buf: Buffer): Map<string, DigestEntry> {
  const lines = buf.toString('latin1').split('\n');
  if (lines.pop() !== '') throw corrupt(`${where}: damaged (does not end with a newline)`);
  const version = VERSIONS.get(lines[0]);
  if (!version) throw corrupt(`${where}: not a stasis digest, or damaged (first line is not '${HEADERS[3]}', '${HEADERS[2]}' or '${HEADERS[1]}')`);
  const out = new Map<string, DigestEntry>();
  let prev = '';
  for (let i = 1; i < lines.length; i++) {
    const m = LINE_RE.exec(lines[i]);
    const size = m ? Number(m[1]) : NaN;
    const chunk = m?.[4] !== undefined ? Number(m[4]) : undefined;
    const alg: ChunkAlg = m?.[3] ? 'crc32' : 'sha256';
    if (!m || !Number.isSafeInteger(size) || !NAME_RE.test(m[5]) || m[5] === DIGEST_FILE || (chunk !== undefined && (version === 1 || !validChunk(chunk) || (version === 2 && alg !== 'sha256')))) {
      const forms = version === 3 ? ", 'SIZE crc32*CHUNK NAME' or 'SIZE *CHUNK NAME'" : version === 2 ? " or 'SIZE *CHUNK NAME'" : '';
      throw corrupt(`${where}: line ${i + 1} is damaged (not 'SIZE SHA256 NAME'${forms})`);
    }
    const name = m[5];
    if (name <= prev) throw corrupt(`${where}: line ${i + 1} is damaged (${name} out of order or listed twice)`);
    prev = name;
    if (chunk === undefined) { out.set(name, { name, size, sha256: m[2] }); continue; }
    const chunks: string[] = [];
    for (let k = chunkCount(size, chunk); k > 0; k--) {
      const c = CHUNK_LINE_RE[alg].exec(lines[++i] ?? '');
      if (!c) throw corrupt(`${where}: line ${i + 1} is damaged (${name} lists ${chunkCount(size, chunk)} chunks, not ' ${alg.toUpperCase()}' here)`);
      chunks.push(c[1]);
    }
    out.set(name, { name, size, chunk, chunks, alg });
  }
  if (out.size === 0) throw corrupt(`${where}: damaged (lists no files)`);
  // Belt and braces: the canonical form of what was read is what was read.
  if (!formatDigest(out.values(), version).equals(buf)) throw corrupt(`${where}: damaged (not in canonical form)`);
  return out;
}

// ---------------------------------------------------------------- reading

const READ_CHUNK = 1 << 20;
let readBuf: Buffer | undefined;

/** SHA-256 and size of an open file, streamed (never the whole file in memory). */
export function hashFd(fd: number): { size: number; sha256: string } {
  const h = crypto.createHash('sha256');
  const b = (readBuf ??= Buffer.allocUnsafe(READ_CHUNK));
  let size = 0;
  for (;;) {
    const n = fs.readSync(fd, b, 0, b.length, size);
    if (n === 0) break;
    h.update(n === b.length ? b : b.subarray(0, n));
    size += n;
  }
  return { size, sha256: h.digest('hex') };
}

// ---------------------------------------------------------------- writing

/** Pages files (pages-N.img: memory, memfds, SysV shm) are hashed per chunk; every other file whole. */
export function isChunked(name: string): boolean {
  return name.startsWith('pages-');
}

/** Sum chunks of `len` bytes from `fd` at `off` by `alg`, each CHUNK bytes (the last shorter), on this thread. */
function hashChunksFd(fd: number, off: number, len: number, chunk: number, alg: ChunkAlg): string[] {
  const b = (readBuf ??= Buffer.allocUnsafe(READ_CHUNK));
  const out: string[] = [];
  for (let at = off; at < off + len; at += chunk) {
    const h = chunkSum(alg);
    const end = Math.min(off + len, at + chunk);
    for (let pos = at; pos < end; ) {
      const n = fs.readSync(fd, b, 0, Math.min(b.length, end - pos), pos);
      if (n === 0) throw new Error(`the file ends at ${pos} bytes, ${end} were expected`);
      h.update(n === b.length ? b : b.subarray(0, n));
      pos += n;
    }
    out.push(h.hex());
  }
  return out;
}

/** Per-chunk sums of data arriving in order (a page server's sender: it sees every byte it sends). */
export class ChunkedHasher {
  private readonly sums: string[] = [];
  private hash: ChunkSum;
  private inChunk = 0;
  private size = 0;

  constructor(private readonly chunk = CHUNK_SIZE, private readonly alg = CHUNK_ALG) {
    this.hash = chunkSum(alg);
  }

  update(data: Buffer): void {
    for (let o = 0; o < data.length; ) {
      const n = Math.min(data.length - o, this.chunk - this.inChunk);
      this.hash.update(n === data.length ? data : data.subarray(o, o + n));
      o += n;
      this.inChunk += n;
      this.size += n;
      if (this.inChunk === this.chunk) { this.sums.push(this.hash.hex()); this.hash = chunkSum(this.alg); this.inChunk = 0; }
    }
  }

  /** The entry of file `name` (the hasher is done). */
  finish(name: string): DigestEntry {
    if (this.inChunk) this.sums.push(this.hash.hex());
    this.inChunk = 0;
    return { name, size: this.size, chunk: this.chunk, chunks: this.sums, alg: this.alg };
  }
}

/** Below this many bytes of a pages file its chunks are hashed at close, on the dump's thread (no pool started). */
const POOL_THRESHOLD = 8 << 20;

/** One raw file being written: how far, and who hashes it. */
export class RawHash {
  private written = 0;
  private readonly chunked: boolean;
  /** Chunked, through the pool: job ids of the chunks handed over so far. */
  private readonly jobs: number[] = [];
  private result: DigestEntry | undefined;
  private error: string | undefined;
  private finished = false;
  /** Chunks from `fedFrom` on are summed here from the data written (feed()), not read back by the pool. */
  private fed: { from: number; sums: ChunkedHasher } | undefined;
  isExternal = false;

  constructor(private readonly owner: DigestBuilder, readonly name: string, private readonly stagedPath: string, private readonly chunk = CHUNK_SIZE) {
    this.chunked = isChunked(name);
  }

  /** Written by someone we do not see: hashed at close. */
  external(): void { this.isExternal = true; }

  /** `n` more bytes were appended: every chunk complete now goes to the pool (past the threshold). */
  advance(n: number): void {
    this.written += n;
    if (this.chunked && !this.isExternal && !this.fed && (this.jobs.length || this.written >= POOL_THRESHOLD)) this.submitUpTo(Math.floor(this.written / this.chunk));
  }

  /**
   * The data of the next bytes to be appended, given before they are (a
   * writer behind: images/write-behind.ts): summed now, on this thread, from
   * memory. Only from a chunk boundary on; the bytes before are the pool's or
   * close's as usual, and advance() still counts every byte written.
   */
  feed(data: Buffer, off: number, len: number): void {
    if (!this.chunked || this.isExternal) return;
    if (!this.fed) {
      if (this.written % this.chunk !== 0) throw new StasisError(ErrorCodes.INTERNAL, `${this.name}: fed from ${this.written}, not a chunk boundary`);
      // Chunks before are complete: the pool's (or summed at close if none was started).
      this.fed = { from: this.written / this.chunk, sums: new ChunkedHasher(this.chunk, CHUNK_ALG) };
    }
    this.fed.sums.update(data.subarray(off, off + len));
  }

  /** Hand chunks [jobs.length, upTo) to the pool; false if there is none. */
  private submitUpTo(upTo: number): boolean {
    const pool = this.owner.pool();
    if (!pool) return false;
    for (let k = this.jobs.length; k < upTo; k++) {
      const off = k * this.chunk;
      this.jobs.push(pool.submit({ path: this.stagedPath }, off, Math.min(this.chunk, this.written - off), CHUNK_ALG));
    }
    return true;
  }

  /** The sums of the chunks handed to the pool, in order (waits for them); undefined and `error` set if one failed. */
  private poolSums(): string[] | undefined {
    const rs = this.jobs.map((id) => this.owner.pool()!.result(id));
    const bad = rs.find((r): r is ChunkResult & { error: string } => 'error' in r);
    if (bad) { this.error = bad.error; return undefined; }
    return rs.map((r) => (r as { sum: string }).sum);
  }

  /** The sums of the file's first `len` bytes, read back here (no pool); undefined and `error` set if it cannot be read. */
  private sumsHere(len: number): string[] | undefined {
    try {
      const fd = fs.openSync(this.stagedPath, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | abi.O.CLOEXEC);
      try { return hashChunksFd(fd, 0, len, this.chunk, CHUNK_ALG); } finally { fs.closeSync(fd); }
    } catch (e) {
      this.error = describeIoError(e);
      return undefined;
    }
  }

  /** A fed file's entry: the head's chunks (pool or here), then the fed ones. */
  private fedEntry(): DigestEntry | undefined {
    const fed = this.fed!;
    const tail = fed.sums.finish(this.name);
    const expected = this.written - fed.from * this.chunk;
    if (tail.size !== expected) { this.error = `${tail.size} bytes summed but ${expected} written`; return undefined; }
    const head = this.headSums ?? this.poolSums();
    return head && { name: this.name, size: this.written, chunk: this.chunk, chunks: [...head, ...tail.chunks!], alg: CHUNK_ALG };
  }

  /** The file is closed (never throws: a problem is reported by the digest). */
  finish(size: number): void {
    if (this.finished) return;
    this.finished = true;
    if (this.isExternal && size >= 0) this.written = size;
    if (size !== this.written) {
      this.error = `${size} bytes on disk but ${this.written} written through the images directory`;
      return;
    }
    if (this.fed) {
      const head = this.fed.from * this.chunk;
      if (this.jobs.length || head >= POOL_THRESHOLD) { if (this.submitUpTo(this.fed.from)) return; }
      this.headSums = head ? this.sumsHere(head) : [];
      return;
    }
    if (this.chunked) {
      if ((this.jobs.length || size >= POOL_THRESHOLD) && this.submitUpTo(chunkCount(size, this.chunk))) return;
      const chunks = this.sumsHere(size);
      if (chunks) this.result = { name: this.name, size, chunk: this.chunk, chunks, alg: CHUNK_ALG };
      return;
    }
    try {
      const fd = fs.openSync(this.stagedPath, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | abi.O.CLOEXEC);
      try { const h = hashFd(fd); this.result = { name: this.name, size: h.size, sha256: h.sha256 }; } finally { fs.closeSync(fd); }
    } catch (e) {
      this.error = describeIoError(e);
    }
  }

  /** The fed file's chunks before the fed ones, when they were summed here at close. */
  private headSums: string[] | undefined;

  entry(): DigestEntry {
    if (!this.finished) throw new StasisError(ErrorCodes.INTERNAL, `${this.name} is still open when the checkpoint is committed`);
    if (!this.error && !this.result) {
      if (this.fed) this.result = this.fedEntry();
      else if (this.jobs.length) {
        const chunks = this.poolSums();
        if (chunks) this.result = { name: this.name, size: this.written, chunk: this.chunk, chunks, alg: CHUNK_ALG };
      }
    }
    if (this.error || !this.result) throw new StasisError(ErrorCodes.IO_ERROR, `cannot hash ${this.name}: ${this.error}`);
    if (this.result.size !== this.written) throw new StasisError(ErrorCodes.INTERNAL, `${this.name}: hashed ${this.result.size} bytes of ${this.written}`);
    return this.result;
  }
}

/** The digest of a checkpoint being written (see the top of this file). */
export class DigestBuilder {
  private readonly whole = new Map<string, DigestEntry>();
  private readonly raw: RawHash[] = [];
  private hashPool: HashPool | undefined;
  private noPool = false;

  /** A file written whole from memory. */
  addWhole(name: string, data: Buffer): void {
    this.whole.set(name, { name, size: data.length, sha256: sha256(data) });
  }

  /** A file hashed elsewhere (sent to a page server). */
  addEntry(e: DigestEntry): void {
    this.whole.set(e.name, { ...e });
  }

  /** A file written piecewise (appended) at `stagedPath`. */
  addRaw(name: string, stagedPath: string, chunk?: number): RawHash {
    const r = new RawHash(this, name, stagedPath, chunk);
    this.raw.push(r);
    return r;
  }

  /** The hashing threads, started on first use; undefined if none can be started (files are then hashed at close). */
  pool(): HashPool | undefined {
    if (this.hashPool || this.noPool) return this.hashPool;
    // The dump's thread goes on copying pages meanwhile: a core is left to it.
    try { this.hashPool = new HashPool(HashPool.defaultThreads(1)); } catch { this.noPool = true; }
    return this.hashPool;
  }

  /** Whether the threads were used (tests). */
  get threaded(): boolean { return this.hashPool !== undefined; }

  /** Every file's entry (waits for the threads). */
  entries(): DigestEntry[] {
    return [...this.whole.values(), ...this.raw.map((r) => r.entry())];
  }

  close(): void {
    this.hashPool?.close();
    this.hashPool = undefined;
  }
}

// ---------------------------------------------------------------- verifying

export interface FileCheck {
  name: string;
  /** The size the digest lists. */
  size: number;
  ok: boolean;
  /** Why not (one line naming the file), and its error code. */
  problem?: string;
  code?: string;
}

export interface ImagesReport {
  dir: string;
  ok: boolean;
  /** Every file the digest lists. */
  files: FileCheck[];
  /** Image files in the directory that the digest does not list (never read by a restore). */
  unlisted: string[];
}

/** The digest of the checkpoint in `images`' directory; throws if it is missing or damaged. */
export function readListing(images: ImageReader): Map<string, DigestEntry> {
  const where = images.path(DIGEST_FILE);
  if (!fs.existsSync(where) && !isLink(where)) {
    if (!images.exists('inventory.img')) throw new StasisError(ErrorCodes.BAD_IMAGE, `${images.path('inventory.img')}: missing: not a complete checkpoint`);
    throw new StasisError(ErrorCodes.BAD_IMAGE, `${where}: missing, so the images cannot be verified (made by criu or an older stasis? --no-verify restores without verifying)`);
  }
  return parseDigest(where, images.raw(DIGEST_FILE));
}

function isLink(p: string): boolean {
  try { return fs.lstatSync(p).isSymbolicLink(); } catch { return false; }
}

/** Open a listed file as a restore would (no link, trusted owner, regular file); a problem as a FileCheck. */
function openListed(images: ImageReader, e: DigestEntry, where: string, check: FileCheck): number | undefined {
  const p = images.path(e.name);
  try {
    fs.lstatSync(p);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    Object.assign(check, { ok: false, code: ErrorCodes.CORRUPT, problem: `${p}: missing (listed in ${where})` });
    return undefined;
  }
  try {
    return images.open(e.name);
  } catch (err) {
    if (!(err instanceof StasisError)) throw err;
    Object.assign(check, { ok: false, code: err.code, problem: err.message });
    return undefined;
  }
}

/** Size first (cheap), then contents of a file hashed whole (chunked ones: checkChunked). */
function checkFile(images: ImageReader, e: DigestEntry, where: string, check: FileCheck, hash: boolean): void {
  const fd = openListed(images, e, where, check);
  if (fd === undefined) return;
  const p = images.path(e.name);
  try {
    const size = hash ? undefined : fs.fstatSync(fd).size;
    const got = hash ? hashFd(fd) : undefined;
    const n = got?.size ?? size!;
    if (n !== e.size) Object.assign(check, { ok: false, code: ErrorCodes.CORRUPT, problem: `${p}: ${n} bytes, but ${where} lists ${e.size}` });
    else if (got && got.sha256 !== e.sha256) Object.assign(check, { ok: false, code: ErrorCodes.CORRUPT, problem: `${p}: contents do not match their SHA-256 in ${where}` });
  } catch (err) {
    Object.assign(check, { ok: false, code: ErrorCodes.IO_ERROR, problem: `${p}: cannot read: ${describeIoError(err)}` });
  } finally {
    fs.closeSync(fd);
  }
}

function chunkMismatch(p: string, where: string, e: DigestEntry, k: number): string {
  const from = k * e.chunk!;
  return `${p}: contents do not match their ${ALG_NAME[e.alg ?? 'sha256']} in ${where} (chunk ${k}, bytes ${from} to ${Math.min(e.size, from + e.chunk!)})`;
}

/**
 * The chunks of chunked files, checked together: on the pool's threads when
 * there is enough to hash (this thread waits), else here. Results are
 * judged in file order, so the problem reported is the first one.
 */
function checkChunked(images: ImageReader, es: DigestEntry[], where: string, checks: Map<string, FileCheck>): void {
  const total = es.reduce((n, e) => n + e.size, 0);
  const pool = total >= POOL_THRESHOLD ? startPool() : undefined;
  const open: { e: DigestEntry; fd: number; jobs: number[] }[] = [];
  try {
    for (const e of es) {
      const fd = openListed(images, e, where, checks.get(e.name)!);
      if (fd === undefined) continue;
      const jobs: number[] = [];
      if (pool) for (let k = 0; k < e.chunks!.length; k++) jobs.push(pool.submit({ fd }, k * e.chunk!, Math.min(e.chunk!, e.size - k * e.chunk!), e.alg ?? 'sha256'));
      open.push({ e, fd, jobs });
    }
    for (const { e, fd, jobs } of open) {
      const check = checks.get(e.name)!;
      const p = images.path(e.name);
      let sums: string[];
      try {
        if (pool) {
          const rs = jobs.map((id) => pool.result(id));
          const bad = rs.find((r): r is ChunkResult & { error: string } => 'error' in r);
          if (bad) throw Object.assign(new Error(bad.error), { code: bad.error });
          sums = rs.map((r) => (r as { sum: string }).sum);
        } else {
          sums = hashChunksFd(fd, 0, e.size, e.chunk!, e.alg ?? 'sha256');
        }
      } catch (err) {
        Object.assign(check, { ok: false, code: ErrorCodes.IO_ERROR, problem: `${p}: cannot read: ${describeIoError(err)}` });
        continue;
      }
      const k = sums.findIndex((s, i) => s !== e.chunks![i]);
      if (k >= 0) Object.assign(check, { ok: false, code: ErrorCodes.CORRUPT, problem: chunkMismatch(p, where, e, k) });
    }
  } finally {
    for (const { fd } of open) fs.closeSync(fd);
    pool?.close();
  }
}

function startPool(threads?: number): HashPool | undefined {
  try { return new HashPool(threads); } catch { return undefined; }
}

/** A read-ahead pool started before it is needed (prewarmReadAhead), taken by the first DeferredChunks to need one. */
let prewarmed: HashPool | null | undefined;

/**
 * Start the read-ahead hashing threads now (the lazy heir, while it waits for
 * the restore to end): starting them when the streaming first needs them
 * took ~20 ms of the server's thread, right as the restored tree's first
 * faults came in.
 */
export function prewarmReadAhead(): void {
  prewarmed ??= startReadAheadPool();
}

/** Threads checking chunks ahead of a lazy server, which goes on copying meanwhile: a core is left to it. */
function startReadAheadPool(): HashPool | null {
  return startPool(HashPool.defaultThreads(1)) ?? null;
}

/**
 * Check every file the digest lists against it: `stop` (restore) throws the
 * first problem; otherwise every file is checked and reported. Every file's
 * size is checked before any is hashed: a short file is found at once.
 * `deferChunks`: the chunks of chunked files are left to whoever reads them
 * (the listing's `deferred`), their sizes checked now.
 */
function checkAll(images: ImageReader, stop: boolean, deferChunks = false): { listing: Map<string, DigestEntry> & { deferred?: DeferredChunks }; files: FileCheck[] } {
  const listing: Map<string, DigestEntry> & { deferred?: DeferredChunks } = readListing(images);
  const where = images.path(DIGEST_FILE);
  const files: FileCheck[] = [...listing.values()].map((e) => ({ name: e.name, size: e.size, ok: true }));
  const byName = new Map(files.map((f) => [f.name, f]));
  const fail = (check: FileCheck): void => {
    if (check.ok || !stop) return;
    const hint = check.code === ErrorCodes.CORRUPT ? ': the checkpoint is damaged (--no-verify restores it anyway)' : '';
    throw new StasisError(check.code!, check.problem! + hint);
  };
  for (const check of files) { checkFile(images, listing.get(check.name)!, where, check, false); fail(check); }
  const chunked = [...listing.values()].filter((e) => e.chunks);
  if (deferChunks) {
    if (chunked.length) listing.deferred = new DeferredChunks(images, where, chunked);
  } else {
    // A file whose size is already wrong keeps that problem (reading it would only find it short).
    checkChunked(images, chunked.filter((e) => byName.get(e.name)!.ok), where, byName);
    for (const e of chunked) fail(byName.get(e.name)!);
  }
  for (const check of files) {
    if (!check.ok || listing.get(check.name)!.chunks) continue;
    checkFile(images, listing.get(check.name)!, where, check, true);
    fail(check);
  }
  return { listing, files };
}

/** Chunks a lazy reader has checked ahead of it on the pool: two per thread keep them busy. */
const READ_AHEAD = 2 * HashPool.defaultThreads(1);

/**
 * Chunks a lazy restore checks when it first reads from them: each read of a
 * chunked file goes through range() (or data(), for a file read whole) before
 * any of what it read is used; a chunk that does not match is refused
 * (STASIS_CORRUPT) and one that does is not hashed again.
 */
export class DeferredChunks {
  private readonly done = new Map<string, Uint8Array>();
  private readonly entries = new Map<string, DigestEntry>();
  private buf: Buffer | undefined;
  /** Threads checking chunks ahead of the reader (null: none could be started). */
  private pool: HashPool | undefined | null;
  /** Chunks handed to the pool, by file: chunk → job. */
  private readonly ahead = new Map<string, Map<number, number>>();
  /**
   * Our own fd of each file the pool reads: never a caller's, which could be
   * closed and its number reused while a job is pending. Closed once every
   * chunk of the file is checked (no job can be pending then).
   */
  private readonly fds = new Map<string, number>();

  /** `done`: chunks already checked, by file (another process's progress, taken over). */
  constructor(private readonly images: ImageReader, private readonly where: string, es: DigestEntry[], done?: ReadonlyMap<string, ArrayLike<number>>) {
    for (const e of es) { this.entries.set(e.name, e); this.done.set(e.name, Uint8Array.from(done?.get(e.name) ?? new Uint8Array(e.chunks!.length))); }
  }

  /** File `name`'s entry and which chunks are checked so far (undefined: not a deferred file). */
  progress(name: string): { entry: DigestEntry; done: number[]; where: string } | undefined {
    const e = this.entries.get(name);
    return e && { entry: e, done: [...this.done.get(name)!], where: this.where };
  }

  /**
   * Check the chunks of `name` that [off, off+len) touches, reading them from
   * our open `fd`; then, `ahead` (a lazy server streaming, in file order),
   * hand the next few to the pool: they are then checked by the time it
   * reads them. Not before: starting the pool's threads and their hashing
   * would only slow down the restore and the tree's first faults.
   */
  range(name: string, fd: number, off: number, len: number, ahead = false): void {
    const e = this.entries.get(name);
    if (!e || len <= 0) return;
    const done = this.done.get(name)!;
    const last = Math.min(e.chunks!.length - 1, Math.floor((off + len - 1) / e.chunk!));
    for (let k = Math.floor(off / e.chunk!); k <= last; k++) {
      if (done[k]) continue;
      if (!this.fromPool(e, k, ahead)) this.judge(e, k, this.readChunk(e, fd, k));
      done[k] = 1;
    }
    if (ahead) this.readAhead(e, last + 1);
    const own = this.fds.get(name);
    if (own !== undefined && done.every((x) => x === 1)) { fs.closeSync(own); this.fds.delete(name); }
  }

  /**
   * Chunk k as the pool hashed it, if it was handed over and is hashed (else
   * false: checked here). Waited for only by the streaming (`wait`): a
   * thread still starting, or behind, must not hold up a fault the lazy
   * server has to serve now (a result that comes later stays unread: a few
   * bytes per chunk at most).
   */
  private fromPool(e: DigestEntry, k: number, wait = false): boolean {
    const q = this.ahead.get(e.name);
    const job = q?.get(k);
    if (job === undefined) return false;
    q!.delete(k);
    const r = wait ? this.pool!.result(job) : this.pool!.tryResult(job);
    if (!r) return false;
    if ('error' in r) return false; // read again here, for the exact error
    if (r.sum !== e.chunks![k]) throw new StasisError(ErrorCodes.CORRUPT, `${chunkMismatch(this.images.path(e.name), this.where, e, k)}: the checkpoint is damaged`);
    return true;
  }

  private readChunk(e: DigestEntry, fd: number, k: number): Buffer | undefined {
    const from = k * e.chunk!;
    const n = Math.min(e.chunk!, e.size - from);
    const b = (this.buf && this.buf.length >= n) ? this.buf : (this.buf = Buffer.allocUnsafe(e.chunk!));
    let got = 0;
    try {
      while (got < n) { const r = fs.readSync(fd, b, got, n - got, from + got); if (r === 0) break; got += r; }
    } catch (err) {
      throw new StasisError(ErrorCodes.IO_ERROR, `${this.images.path(e.name)}: cannot read: ${describeIoError(err)}`);
    }
    return got === n ? b.subarray(0, n) : undefined;
  }

  private readAhead(e: DigestEntry, from: number): void {
    const done = this.done.get(e.name)!;
    if (e.size < POOL_THRESHOLD || from >= done.length) return;
    if (this.pool === undefined) {
      this.pool = prewarmed ?? startReadAheadPool();
      prewarmed = undefined;
    }
    if (!this.pool) return;
    let q = this.ahead.get(e.name);
    if (!q) this.ahead.set(e.name, (q = new Map()));
    let fd = this.fds.get(e.name);
    if (fd === undefined) this.fds.set(e.name, (fd = this.images.open(e.name)));
    for (let k = from; k < Math.min(done.length, from + READ_AHEAD); k++) {
      if (!done[k] && !q.has(k)) q.set(k, this.pool.submit({ fd }, k * e.chunk!, Math.min(e.chunk!, e.size - k * e.chunk!), e.alg ?? 'sha256'));
    }
  }

  /** Check every chunk of `name` not checked yet against `data`, the whole file as read. */
  data(name: string, data: Buffer): void {
    const e = this.entries.get(name);
    if (!e) return;
    const done = this.done.get(name)!;
    for (let k = 0; k < done.length; k++) {
      if (done[k]) continue;
      const from = k * e.chunk!;
      // A chunk handed to the pool is taken from there (nothing of it left pending).
      if (!this.fromPool(e, k)) this.judge(e, k, data.length === e.size ? data.subarray(from, Math.min(e.size, from + e.chunk!)) : undefined);
      done[k] = 1;
    }
  }

  /** Whether every chunk was checked (tests). */
  get complete(): boolean { return [...this.done.values()].every((d) => d.every((x) => x === 1)); }

  private judge(e: DigestEntry, k: number, data: Buffer | undefined): void {
    const p = this.images.path(e.name);
    if (!data) throw new StasisError(ErrorCodes.CORRUPT, `${p}: shorter than the ${e.size} bytes ${this.where} lists: the checkpoint is damaged`);
    if (sumChunk(e.alg ?? 'sha256', data) !== e.chunks![k]) throw new StasisError(ErrorCodes.CORRUPT, `${chunkMismatch(p, this.where, e, k)}: the checkpoint is damaged`);
  }
}

/**
 * Verify a checkpoint before a restore: throws the first problem; returns
 * the listing to read by. `deferChunks` (lazy restore): chunked files are
 * checked as they are read, through the listing's `deferred`.
 */
export function verifyImages(dir: string, anyOwner = false, deferChunks = false): DigestListing {
  return checkAll(new ImageReader(dir, anyOwner ? null : undefined), true, deferChunks).listing;
}

/** `stasis check-images`: every file checked; a missing or damaged digest throws. */
export function checkImages(dir: string, anyOwner = false): ImagesReport {
  const images = new ImageReader(dir, anyOwner ? null : undefined);
  const { listing, files } = checkAll(images, false);
  let unlisted: string[] = [];
  try {
    unlisted = fs.readdirSync(dir).filter((f) => f.endsWith('.img') && !listing.has(f)).sort();
  } catch { /* the files were read: a listing failure here changes nothing */ }
  return { dir, ok: files.every((f) => f.ok), files, unlisted };
}
