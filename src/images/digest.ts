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
// any bit of it is refused too:
//
//   stasis-digest 1 sha256
//   SIZE SHA256 NAME
//   ...
//
// Hashing 1 GiB of pages costs about a second of one core: the dump hashes
// its big raw files (pages) in a worker thread that reads each file back from
// the page cache while the dump goes on writing it (digest-worker.ts).
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as crypto from 'node:crypto';
import { Worker, MessageChannel, receiveMessageOnPort, type MessagePort } from 'node:worker_threads';
import { StasisError, ErrorCodes } from '../errors';
import { abi } from '../sys';
import { ImageReader, describeIoError } from './image';

/** The digest's name in the images directory. */
import { DIGEST_FILE } from './digest-name';

export { DIGEST_FILE };
const HEADER = 'stasis-digest 1 sha256';
/** Names a checkpoint's files may have: no path, no leading dot (staging dirs), ASCII. */
const NAME_RE = /^[A-Za-z0-9_][A-Za-z0-9._-]*$/;
const LINE_RE = /^(0|[1-9][0-9]{0,15}) ([0-9a-f]{64}) (.+)$/;

export interface DigestEntry { name: string; size: number; sha256: string }
/** A parsed digest: its entries by file name. */
export type DigestListing = ReadonlyMap<string, DigestEntry>;

function corrupt(msg: string): StasisError {
  return new StasisError(ErrorCodes.CORRUPT, msg);
}

export function sha256(data: Buffer): string {
  return crypto.createHash('sha256').update(data).digest('hex');
}

/** The digest file's bytes for `entries`. */
export function formatDigest(entries: Iterable<DigestEntry>): Buffer {
  const sorted = [...entries].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return Buffer.from([HEADER, ...sorted.map((e) => `${e.size} ${e.sha256} ${e.name}`)].join('\n') + '\n', 'latin1');
}

/** Parse a digest strictly; `where` (its path) names it in errors. */
export function parseDigest(where: string, buf: Buffer): Map<string, DigestEntry> {
  const lines = buf.toString('latin1').split('\n');
  if (lines.pop() !== '') throw corrupt(`${where}: damaged (does not end with a newline)`);
  if (lines[0] !== HEADER) throw corrupt(`${where}: not a stasis digest, or damaged (first line is not '${HEADER}')`);
  const out = new Map<string, DigestEntry>();
  let prev = '';
  for (let i = 1; i < lines.length; i++) {
    const m = LINE_RE.exec(lines[i]);
    const size = m ? Number(m[1]) : NaN;
    if (!m || !Number.isSafeInteger(size) || !NAME_RE.test(m[3]) || m[3] === DIGEST_FILE) {
      throw corrupt(`${where}: line ${i + 1} is damaged (not 'SIZE SHA256 NAME')`);
    }
    if (m[3] <= prev) throw corrupt(`${where}: line ${i + 1} is damaged (${m[3]} out of order or listed twice)`);
    prev = m[3];
    out.set(m[3], { name: m[3], size, sha256: m[2] });
  }
  if (out.size === 0) throw corrupt(`${where}: damaged (lists no files)`);
  // Belt and braces: the canonical form of what was read is what was read.
  if (!formatDigest(out.values()).equals(buf)) throw corrupt(`${where}: damaged (not in canonical form)`);
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

/** Raw files smaller than this are hashed by reading them back at close; bigger ones by the worker. */
const WORKER_THRESHOLD = 8 << 20;
/** The worker is told how far a file is written every this many bytes. */
const POST_EVERY = 8 << 20;
/** A worker that hashed nothing for this long is taken for dead. */
const STALL_MS = 60000;

type WorkerResult = { id: number; size: number; sha256: string } | { id: number; error: string };

/** The hashing thread: started on the first big file, fed file names and lengths. */
class HashWorker {
  private readonly worker: Worker;
  private readonly port: MessagePort;
  /** [0]: results posted, [1]: chunks hashed (a heartbeat). */
  private readonly ctl: Int32Array;
  private readonly results = new Map<number, WorkerResult>();
  private nextId = 1;

  constructor() {
    const sab = new SharedArrayBuffer(8);
    this.ctl = new Int32Array(sab);
    const { port1, port2 } = new MessageChannel();
    const file = path.join(__dirname, 'digest-worker.js');
    // A missing file would only show as a worker error event, which this blocked thread never sees.
    if (!fs.existsSync(file)) throw new Error(`${file} is missing`);
    this.worker = new Worker(file, { workerData: { ctl: sab, port: port2 }, transferList: [port2] });
    this.worker.unref();
    this.port = port1;
  }

  start(file: string): number {
    const id = this.nextId++;
    this.worker.postMessage({ id, path: file });
    return id;
  }

  /** Bytes [0, upto) of job `id` are written; `last`: that is all of it. */
  upto(id: number, upto: number, last: boolean): void {
    this.worker.postMessage({ id, upto, last });
  }

  /** Wait for the result of job `id` (the dump's thread blocks: it has nothing else to do then). */
  result(id: number): WorkerResult {
    let beat = Atomics.load(this.ctl, 1);
    let since = Date.now();
    for (;;) {
      const posted = Atomics.load(this.ctl, 0);
      for (let m = receiveMessageOnPort(this.port); m; m = receiveMessageOnPort(this.port)) {
        const r = m.message as WorkerResult;
        this.results.set(r.id, r);
      }
      const r = this.results.get(id);
      if (r) return r;
      Atomics.wait(this.ctl, 0, posted, 1000);
      const b = Atomics.load(this.ctl, 1);
      if (b !== beat) { beat = b; since = Date.now(); }
      else if (Date.now() - since > STALL_MS) throw new StasisError(ErrorCodes.INTERNAL, `the digest thread hashed nothing for ${STALL_MS / 1000} s`);
    }
  }

  close(): void {
    this.port.close();
    void this.worker.terminate();
  }
}

/** One raw file being written: how far, and who hashes it. */
export class RawHash {
  private written = 0;
  private posted = 0;
  private job: number | undefined;
  /** No worker to be had: hash at close. */
  private inline = false;
  private result: { size: number; sha256: string } | undefined;
  private error: string | undefined;
  private finished = false;
  isExternal = false;

  constructor(private readonly owner: DigestBuilder, readonly name: string, private readonly stagedPath: string) {}

  /** Written by someone we do not see: hashed whole at close. */
  external(): void { this.isExternal = true; }

  /** `n` more bytes were appended. */
  advance(n: number): void {
    this.written += n;
    if (this.job === undefined && !this.inline && this.written >= WORKER_THRESHOLD) {
      this.job = this.owner.startJob(this.stagedPath);
      this.inline = this.job === undefined;
    }
    if (this.job !== undefined && this.written - this.posted >= POST_EVERY) {
      this.owner.worker!.upto(this.job, this.written, false);
      this.posted = this.written;
    }
  }

  /** The file is closed (never throws: a problem is reported by the digest). */
  finish(size: number): void {
    if (this.finished) return;
    this.finished = true;
    if (this.isExternal && size >= 0) this.advance(size);
    if (size !== this.written) {
      this.error = `${size} bytes on disk but ${this.written} written through the images directory`;
      return;
    }
    if (this.job !== undefined) {
      this.owner.worker!.upto(this.job, this.written, true);
      return;
    }
    try {
      const fd = fs.openSync(this.stagedPath, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | abi.O.CLOEXEC);
      try { this.result = hashFd(fd); } finally { fs.closeSync(fd); }
    } catch (e) {
      this.error = describeIoError(e);
    }
  }

  entry(): DigestEntry {
    if (!this.finished) throw new StasisError(ErrorCodes.INTERNAL, `${this.name} is still open when the checkpoint is committed`);
    if (!this.error && !this.result && this.job !== undefined) {
      const r = this.owner.worker!.result(this.job);
      if ('error' in r) this.error = r.error;
      else this.result = r;
    }
    if (this.error || !this.result) throw new StasisError(ErrorCodes.IO_ERROR, `cannot hash ${this.name}: ${this.error}`);
    if (this.result.size !== this.written) throw new StasisError(ErrorCodes.INTERNAL, `${this.name}: hashed ${this.result.size} bytes of ${this.written}`);
    return { name: this.name, size: this.result.size, sha256: this.result.sha256 };
  }
}

/** The digest of a checkpoint being written (see the top of this file). */
export class DigestBuilder {
  private readonly whole = new Map<string, DigestEntry>();
  private readonly raw: RawHash[] = [];
  worker: HashWorker | undefined;
  private noWorker = false;

  /** A file written whole from memory. */
  addWhole(name: string, data: Buffer): void {
    this.whole.set(name, { name, size: data.length, sha256: sha256(data) });
  }

  /** A file written piecewise (appended) at `stagedPath`. */
  addRaw(name: string, stagedPath: string): RawHash {
    const r = new RawHash(this, name, stagedPath);
    this.raw.push(r);
    return r;
  }

  /** A job for the worker; undefined if no thread can be started (the file is then hashed at close). */
  startJob(stagedPath: string): number | undefined {
    if (this.noWorker) return undefined;
    try {
      this.worker ??= new HashWorker();
    } catch {
      this.noWorker = true;
      return undefined;
    }
    return this.worker.start(stagedPath);
  }

  /** Every file's entry (waits for the worker). */
  entries(): DigestEntry[] {
    return [...this.whole.values(), ...this.raw.map((r) => r.entry())];
  }

  close(): void {
    this.worker?.close();
    this.worker = undefined;
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

/** Size first (cheap), then contents. */
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

/**
 * Check every file the digest lists against it: `stop` (restore) throws the
 * first problem; otherwise every file is checked and reported. Every file's
 * size is checked before any is hashed: a short file is found at once.
 */
function checkAll(images: ImageReader, stop: boolean): { listing: Map<string, DigestEntry>; files: FileCheck[] } {
  const listing = readListing(images);
  const where = images.path(DIGEST_FILE);
  const files: FileCheck[] = [...listing.values()].map((e) => ({ name: e.name, size: e.size, ok: true }));
  for (const hash of [false, true]) {
    for (const check of files) {
      if (!check.ok) continue;
      checkFile(images, listing.get(check.name)!, where, check, hash);
      if (!check.ok && stop) {
        const hint = check.code === ErrorCodes.CORRUPT ? ': the checkpoint is damaged (--no-verify restores it anyway)' : '';
        throw new StasisError(check.code!, check.problem! + hint);
      }
    }
  }
  return { listing, files };
}

/** Verify a checkpoint before a restore: throws the first problem; returns the listing to read by. */
export function verifyImages(dir: string, anyOwner = false): DigestListing {
  return checkAll(new ImageReader(dir, anyOwner ? null : undefined), true).listing;
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
