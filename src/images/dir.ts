// The images directory. A dump writes into a fresh private staging
// directory inside it (every file created O_EXCL|O_NOFOLLOW, so nothing is
// ever written through a planted link), hashing every file as it goes; once
// the checkpoint is complete it writes the digest (digest.ts), renames the
// staging directory to a commit directory (from then on the new checkpoint
// is whole on disk) and moves its files into place: the old inventory first
// (from then on the directory reads as incomplete), the digest, the new
// inventory last. A failed or killed dump never damages an older checkpoint
// there; one killed while moving files is finished by the next stasis to lock
// the directory (the new checkpoint replaces the old one: a complete
// checkpoint is only ever removed by being replaced). A directory without an
// inventory is never taken for a complete one. The directory is locked
// (flock) while a dump or restore uses it.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { flock, LOCK, geteuid, getegid } from '../sys';
import { abi } from '../sys';
import { StasisError, ErrorCodes } from '../errors';
import { encodeImage, openNew, writeAll, ioError, type Part } from './image';
import { DigestBuilder, DIGEST_FILE, CHUNK_SIZE, formatDigest, parseDigest, type RawHash, type DigestEntry } from './digest';
import type { ImageKind } from './magic';
import { WriteBehind, WRITE_BEHIND_MIN } from './write-behind';

const STAGING_PREFIX = '.stasis-staging-';
/** criu's link to the parent images directory (images/chain.ts; named here: chain.ts imports this file). */
export const PARENT_LINK = 'parent';
const COMMIT_PREFIX = '.stasis-commit-';

/** Refuse a directory another user could plant files or links in. */
export function checkDirTrust(dir: string, st: fs.Stats): void {
  const me = geteuid();
  if (st.uid !== me) {
    throw new StasisError(ErrorCodes.UNSAFE, `images directory ${dir} is owned by uid ${st.uid}, not by us (uid ${me}); refusing to use it`);
  }
  if (st.mode & 0o002) throw new StasisError(ErrorCodes.UNSAFE, `images directory ${dir} is writable by others (mode ${(st.mode & 0o7777).toString(8)}); refusing to use it`);
  if (st.mode & 0o020 && st.gid !== getegid()) throw new StasisError(ErrorCodes.UNSAFE, `images directory ${dir} is writable by group ${st.gid} (mode ${(st.mode & 0o7777).toString(8)}); refusing to use it`);
}

/**
 * Create the images directory (0700) and any missing parents. Done by hand:
 * Node 20's recursive mkdirSync spins forever under /proc.
 */
function ensureDir(dir: string): void {
  const abs = path.resolve(dir);
  const missing: string[] = [];
  for (let d = abs; ; d = path.dirname(d)) {
    let st: fs.Stats | undefined;
    try { st = fs.statSync(d); } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT') throw ioError(d, 'use images directory', e);
      const link = danglingLink(d);
      if (link !== undefined) throw new StasisError(ErrorCodes.USAGE, `images directory ${dir}: ${d} is a symbolic link to ${link}, which does not exist`);
    }
    if (st) {
      if (!st.isDirectory()) throw new StasisError(ErrorCodes.USAGE, `images directory ${dir}: ${d} exists and is not a directory`);
      break;
    }
    if (path.dirname(d) === d) break;
    missing.unshift(d);
  }
  for (const d of missing) {
    try {
      fs.mkdirSync(d, { mode: 0o700 });
    } catch (e) {
      // Made meanwhile by another (two dumps into one new directory at once): a
      // directory is all we need here; the directory's lock decides between them.
      if ((e as NodeJS.ErrnoException).code === 'EEXIST' && isDirectory(d)) continue;
      throw ioError(d, 'create images directory', e);
    }
  }
}

function isDirectory(p: string): boolean {
  try { return fs.lstatSync(p).isDirectory(); } catch { return false; }
}

/** The target of `p` if it is a symbolic link (the caller found nothing behind it). */
function danglingLink(p: string): string | undefined {
  try { return fs.readlinkSync(p); } catch { return undefined; }
}

/** Open a directory and take its lock; throws BUSY when another stasis holds it. */
function openLocked(dir: string, exclusive: boolean, what: string): number {
  let fd: number;
  try {
    fd = fs.openSync(dir, abi.O.RDONLY | abi.O.DIRECTORY | abi.O.CLOEXEC);
  } catch (e) {
    throw ioError(dir, 'open images directory', e);
  }
  const r = flock(fd, (exclusive ? LOCK.EX : LOCK.SH) | LOCK.NB);
  if (r < 0) {
    fs.closeSync(fd);
    if (r === -abi.ERRNO.EWOULDBLOCK) throw new StasisError(ErrorCodes.BUSY, `images directory ${dir} is in use by another stasis (${what} refused; try again when it is done)`);
    throw new StasisError(ErrorCodes.IO_ERROR, `cannot lock images directory ${dir}: errno ${-r}`);
  }
  return fd;
}

/** Names of the directory's entries starting with `prefix`. */
function withPrefix(here: string, prefix: string): string[] {
  return fs.readdirSync(here).filter((n) => n.startsWith(prefix));
}

/** The files listed by the digest in place, if it reads as one (to remove those a new checkpoint no longer has). */
function listedNow(here: string): string[] {
  try {
    const fd = fs.openSync(path.join(here, DIGEST_FILE), fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | abi.O.CLOEXEC);
    try { return [...parseDigest(DIGEST_FILE, fs.readFileSync(fd)).keys()]; } finally { fs.closeSync(fd); }
  } catch {
    return [];
  }
}

/**
 * Move the files of commit directory `name` (a complete checkpoint) into
 * `here`, the inventory last; also what finishes a commit that was killed
 * half way. `step` is a failure-injection point after the first move. The
 * commit directory is used through its fd: never through a link.
 */
function moveIn(here: string, name: string, step?: (s: string) => void): void {
  let dfd: number;
  try {
    dfd = fs.openSync(path.join(here, name), abi.O.RDONLY | abi.O.DIRECTORY | abi.O.NOFOLLOW | abi.O.CLOEXEC);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'ELOOP' && code !== 'ENOTDIR') throw e;
    fs.unlinkSync(path.join(here, name)); // not ours (a planted link or file): removed, never followed
    return;
  }
  const from = `/proc/self/fd/${dfd}`;
  let stale: string[] = [];
  let names: string[] = [];
  try {
    names = fs.readdirSync(from);
    stale = names.includes(DIGEST_FILE) ? listedNow(here) : [];
    // The old checkpoint stops being one first; a half-moved new one has no inventory yet.
    if (names.includes('inventory.img')) fs.rmSync(path.join(here, 'inventory.img'), { force: true });
    const last = [DIGEST_FILE, 'inventory.img'];
    const order = [...names.filter((f) => !last.includes(f)), ...last.filter((f) => names.includes(f))];
    order.forEach((f, i) => {
      fs.renameSync(path.join(from, f), path.join(here, f));
      if (i === 0) step?.('commit-move');
    });
  } finally {
    fs.closeSync(dfd);
  }
  fs.rmdirSync(path.join(here, name));
  // A parent link the new checkpoint lacks is the old one's: it goes (never followed).
  if (names.length && !names.includes(PARENT_LINK)) {
    try { if (fs.lstatSync(path.join(here, PARENT_LINK)).isSymbolicLink()) fs.unlinkSync(path.join(here, PARENT_LINK)); } catch { /* none */ }
  }
  if (!stale.length) return;
  const kept = new Set(listedNow(here));
  if (!kept.size) return; // the new digest does not read: remove nothing
  for (const f of stale) if (!kept.has(f)) fs.rmSync(path.join(here, f), { force: true });
}

/** Finish commits that a killed dump left half done (the directory's lock held exclusively). */
function finishCommits(dir: string, here: string): void {
  for (const name of withPrefix(here, COMMIT_PREFIX)) {
    try { moveIn(here, name); } catch (e) { throw ioError(dir, 'finish an interrupted dump into', e); }
  }
}

/** Where a dump writes: see the top of this file. */
export class DumpDir {
  private readonly staged: string[] = [];
  private readonly digest = new DigestBuilder();
  private written = 0;
  private done = false;

  private constructor(readonly dir: string, private readonly fd: number, private readonly stagingName: string, private readonly stagingFd: number) {}

  /** Validate (or create) `dir`, lock it, finish or clear what killed dumps left, make a new staging dir. */
  static open(dir: string): DumpDir {
    ensureDir(dir);
    let st: fs.Stats;
    try { st = fs.statSync(dir); } catch (e) { throw ioError(dir, 'use images directory', e); }
    checkDirTrust(dir, st);
    const fd = openLocked(dir, true, 'dump');
    try {
      const here = `/proc/self/fd/${fd}`;
      finishCommits(dir, here);
      // We hold the lock: staging dirs left here are from killed dumps.
      for (const name of withPrefix(here, STAGING_PREFIX)) fs.rmSync(path.join(here, name), { recursive: true, force: true });
      let staging: string;
      try { staging = fs.mkdtempSync(path.join(here, STAGING_PREFIX)); } catch (e) { throw ioError(dir, 'write into images directory', e); }
      const sfd = fs.openSync(staging, abi.O.RDONLY | abi.O.DIRECTORY | abi.O.CLOEXEC | abi.O.NOFOLLOW);
      return new DumpDir(dir, fd, path.basename(staging), sfd);
    } catch (e) {
      fs.closeSync(fd);
      throw e;
    }
  }

  private stagedPath(file: string): string { return `/proc/self/fd/${this.stagingFd}/${file}`; }

  /** The name an image will have once in place (for messages). */
  finalPath(file: string): string { return path.join(this.dir, file); }

  private writeWhole(file: string, data: Buffer): void {
    const p = this.stagedPath(file);
    const fd = openNew(p);
    try {
      writeAll(fd, data, this.finalPath(file));
    } finally {
      fs.closeSync(fd);
    }
    this.digest.addWhole(file, data);
    this.staged.push(file);
  }

  write(file: string, kind: ImageKind, list: Part[]): void {
    this.writeWhole(file, encodeImage(kind, list));
  }

  /** A raw file (pages), appended to piecewise: hashed as it is written. */
  create(file: string): RawImageOut {
    const fd = openNew(this.stagedPath(file));
    this.staged.push(file);
    return new RawImageOut(fd, this.finalPath(file), this.digest.addRaw(file, this.stagedPath(file)));
  }

  /** A file of the checkpoint a page server writes: listed in the digest as sent, never present here. */
  remote(entry: DigestEntry): void {
    this.digest.addEntry(entry);
  }

  /** A symbolic link in the checkpoint (criu's `parent`): moved into place with the files. */
  symlink(name: string, target: string): void {
    try { fs.symlinkSync(target, this.stagedPath(name)); } catch (e) { throw ioError(this.finalPath(name), 'create link', e); }
  }

  /**
   * Write the digest, then move every staged file into place (see the top of
   * this file). `step`: failure injection (tests).
   */
  commit(step?: (s: string) => void): void {
    const entries = this.digest.entries();
    const hashed = new Set(entries.map((e) => e.name));
    for (const f of this.staged) if (!hashed.has(f)) throw new StasisError(ErrorCodes.INTERNAL, `${f} was written but not hashed`);
    const digest = formatDigest(entries);
    this.writeWhole(DIGEST_FILE, digest);
    this.written = entries.reduce((n, e) => n + e.size, digest.length);
    const here = `/proc/self/fd/${this.fd}`;
    const commitName = COMMIT_PREFIX + this.stagingName.slice(STAGING_PREFIX.length);
    try {
      fs.renameSync(path.join(here, this.stagingName), path.join(here, commitName));
      moveIn(here, commitName, step);
    } catch (e) {
      if (e instanceof StasisError) throw e;
      throw ioError(this.dir, 'move images into', e);
    }
    this.done = true;
  }

  /** Drop the staging directory (after commit: gone; after a failure: everything), the hashing threads and the lock. */
  close(): void {
    if (this.isClosed) return;
    this.isClosed = true;
    try {
      this.digest.close();
      fs.closeSync(this.stagingFd);
      fs.rmSync(path.join(`/proc/self/fd/${this.fd}`, this.stagingName), { recursive: true, force: true });
    } finally {
      fs.closeSync(this.fd);
    }
  }

  private isClosed = false;

  get committed(): boolean { return this.done; }

  /** Bytes of every file of the checkpoint (after commit). */
  get bytesWritten(): number { return this.written; }
}

/** A raw image being written: appended to, hashed as it goes (a big one written behind: write-behind.ts). */
export class RawImageOut {
  private pos = 0;
  private closed = false;
  /** Write-behind jobs not yet known written, in order (their bytes are not hashed yet). */
  private readonly behind: { id: number; len: number }[] = [];
  private wb: WriteBehind | null | undefined;
  /** Where the digest's sums began to be fed from memory (0: not yet): every byte from there is fed. */
  private fedFrom = 0;

  constructor(private readonly fd: number, readonly path: string, private readonly hash: RawHash) {}

  /** Append `len` bytes of `data` from `off`. */
  write(data: Buffer, off = 0, len = data.length - off): void {
    if (this.hash.isExternal) throw new StasisError(ErrorCodes.INTERNAL, `${this.path}: written after being handed over`);
    this.settle();
    if (this.fedFrom) this.hash.feed(data, off, len);
    try {
      for (let done = 0; done < len; ) done += fs.writeSync(this.fd, data, off + done, len - done, this.pos + done);
    } catch (e) {
      throw ioError(this.path, 'write', e);
    }
    this.pos += len;
    this.hash.advance(len);
  }

  /**
   * Append spans of `buf` (offset, length pairs, in order). Past
   * WRITE_BEHIND_MIN bytes of the file, with `buf` a whole SharedArrayBuffer,
   * the write-behind thread writes them: returns its job, and `buf` must not
   * change before settle(job). Else written now: returns 0.
   */
  writeSpans(buf: Buffer, spans: number[]): number {
    if (this.pos < WRITE_BEHIND_MIN || !(buf.buffer instanceof SharedArrayBuffer) || buf.byteOffset !== 0 || this.hash.isExternal || (this.wb ??= WriteBehind.get()) === null) {
      for (let i = 0; i < spans.length; i += 2) this.write(buf, spans[i], spans[i + 1]);
      return 0;
    }
    if (!this.fedFrom && this.pos % CHUNK_SIZE) {
      // In place up to a chunk boundary of the digest: from there on its sums are fed from memory.
      const rest = this.writeUpTo(Math.ceil(this.pos / CHUNK_SIZE) * CHUNK_SIZE, buf, spans);
      if (!rest.length) return 0;
      spans = rest;
    }
    this.fedFrom ||= this.pos;
    let len = 0;
    for (let i = 0; i < spans.length; i += 2) {
      len += spans[i + 1];
      // Summed from memory here (the digest's pool would read them back from the file).
      this.hash.feed(buf, spans[i], spans[i + 1]);
    }
    const id = this.wb.submit(this.fd, this.pos, buf, spans);
    this.pos += len;
    this.behind.push({ id, len });
    return id;
  }

  /** Write spans in place until the file reaches `boundary`; returns the spans left (the one across it split). */
  private writeUpTo(boundary: number, buf: Buffer, spans: number[]): number[] {
    for (let i = 0; i < spans.length; i += 2) {
      const [off, len] = [spans[i], spans[i + 1]];
      const room = boundary - this.pos;
      if (room >= len) { this.write(buf, off, len); continue; }
      if (room > 0) this.write(buf, off, room);
      return [off + room, len - room, ...spans.slice(i + 2)];
    }
    return [];
  }

  /** Wait until write-behind job `upTo` and those before it are written (default: all); their bytes are hashed then. */
  settle(upTo = Infinity): void {
    while (this.behind.length && this.behind[0].id <= upTo) {
      const j = this.behind[0];
      const err = this.wb!.wait(j.id);
      this.behind.shift();
      if (err !== undefined) {
        // Nothing after it may be hashed: what remains is waited for and dropped (close() would find the sizes apart anyway).
        for (const rest of this.behind.splice(0)) this.wb!.wait(rest.id);
        throw ioError(this.path, 'write', Object.assign(new Error(err), { code: err }));
      }
      this.hash.advance(j.len);
    }
  }

  /** The fd for a writer we do not see (see RawImage): then no write() here, the file is hashed whole at close. */
  handOver(): number {
    if (this.pos) throw new StasisError(ErrorCodes.INTERNAL, `${this.path}: handed over after writes`);
    this.hash.external();
    return this.fd;
  }

  /** Close (never throws: a problem shows at commit). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    // No job may still write to the fd (its number could be another file's once closed).
    try { this.settle(); } catch { /* a write error: settle waited for the rest; the sizes tell the digest */ }
    if (this.behind.length) {
      // The thread stalled with a job: the fd stays open (and unreused) rather than closed under it.
      this.hash.finish(-1);
      return;
    }
    let size = -1;
    try { size = fs.fstatSync(this.fd).size; } catch { /* reported as a size mismatch */ }
    try { fs.closeSync(this.fd); } catch { /* nothing to do */ }
    this.hash.finish(size);
  }
}

/**
 * A restore (or check) holds a shared lock: no dump may replace the images
 * meanwhile. A commit a killed dump left half done is finished first (under
 * the exclusive lock, briefly).
 */
export function lockForReading(dir: string, what = 'restore'): { close(): void } {
  let st: fs.Stats;
  try { st = fs.statSync(dir); } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const link = code === 'ENOENT' ? danglingLink(dir) : undefined;
    if (link !== undefined) throw new StasisError(ErrorCodes.BAD_IMAGE, `${dir}: a symbolic link to ${link}, which does not exist`);
    if (code === 'ENOENT') throw new StasisError(ErrorCodes.BAD_IMAGE, `${dir}: no such directory`);
    throw ioError(dir, 'read images directory', e);
  }
  if (!st.isDirectory()) throw new StasisError(ErrorCodes.BAD_IMAGE, `${dir}: not a directory`);
  let fd = openLocked(dir, false, what);
  try {
    if (withPrefix(`/proc/self/fd/${fd}`, COMMIT_PREFIX).length) {
      // Only where nobody else could have planted it.
      checkDirTrust(dir, st);
      fs.closeSync(fd);
      fd = -1;
      const ex = openLocked(dir, true, what);
      try { finishCommits(dir, `/proc/self/fd/${ex}`); } finally { fs.closeSync(ex); }
      fd = openLocked(dir, false, what);
    }
  } catch (e) {
    if (fd >= 0) fs.closeSync(fd);
    if (e instanceof StasisError) throw e;
    throw ioError(dir, 'read images directory', e);
  }
  return { close: () => fs.closeSync(fd) };
}
