// The images directory. A dump writes into a fresh private staging
// directory inside it (every file created O_EXCL|O_NOFOLLOW, so nothing is
// ever written through a planted link) and moves its files into place only
// once the checkpoint is complete, inventory.img last: a failed or killed
// dump never damages an older checkpoint there, and a directory without an
// inventory is never taken for a complete one. The directory is locked
// (flock) while a dump or restore uses it.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { flock, LOCK, geteuid, getegid } from '../sys';
import { abi } from '../sys';
import { StasisError, ErrorCodes } from '../errors';
import { writeImageFile, openNew, ioError, type Part } from './image';
import type { ImageKind } from './magic';

const STAGING_PREFIX = '.stasis-staging-';

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
      throw ioError(d, 'create images directory', e);
    }
  }
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

/** Where a dump writes: see the top of this file. */
export class DumpDir {
  private readonly staged: string[] = [];
  private done = false;

  private constructor(readonly dir: string, private readonly fd: number, private readonly stagingName: string, private readonly stagingFd: number) {}

  /** Validate (or create) `dir`, lock it, clear stale staging dirs, make a new one. */
  static open(dir: string): DumpDir {
    ensureDir(dir);
    let st: fs.Stats;
    try { st = fs.statSync(dir); } catch (e) { throw ioError(dir, 'use images directory', e); }
    checkDirTrust(dir, st);
    const fd = openLocked(dir, true, 'dump');
    try {
      const here = `/proc/self/fd/${fd}`;
      // We hold the lock: staging dirs left here are from killed dumps.
      for (const name of fs.readdirSync(here)) if (name.startsWith(STAGING_PREFIX)) fs.rmSync(path.join(here, name), { recursive: true, force: true });
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

  write(file: string, kind: ImageKind, list: Part[]): void {
    writeImageFile(this.stagedPath(file), kind, list);
    this.staged.push(file);
  }

  create(file: string): { fd: number; path: string } {
    const fd = openNew(this.stagedPath(file));
    this.staged.push(file);
    return { fd, path: this.finalPath(file) };
  }

  /**
   * Move every staged file into place: the old inventory goes first (from
   * then on the directory reads as incomplete), the new inventory last.
   */
  commit(): void {
    const here = `/proc/self/fd/${this.fd}`;
    try {
      fs.rmSync(path.join(here, 'inventory.img'), { force: true });
      const order = [...this.staged.filter((f) => f !== 'inventory.img'), ...this.staged.filter((f) => f === 'inventory.img')];
      for (const f of order) fs.renameSync(this.stagedPath(f), path.join(here, f));
    } catch (e) {
      throw ioError(this.dir, 'move images into', e);
    }
    this.done = true;
  }

  /** Drop the staging directory (after commit: empty; after a failure: everything) and the lock. */
  close(): void {
    try {
      fs.closeSync(this.stagingFd);
      fs.rmSync(path.join(`/proc/self/fd/${this.fd}`, this.stagingName), { recursive: true, force: true });
    } finally {
      fs.closeSync(this.fd);
    }
  }

  get committed(): boolean { return this.done; }

  /** Bytes of every file written (after commit: of the checkpoint). */
  get bytesWritten(): number {
    let n = 0;
    for (const f of this.staged) {
      try { n += fs.statSync(path.join(`/proc/self/fd/${this.fd}`, f)).size; } catch { /* not there */ }
    }
    return n;
  }
}

/** A restore (or check) holds a shared lock: no dump may replace the images meanwhile. */
export function lockForReading(dir: string): { close(): void } {
  let st: fs.Stats;
  try { st = fs.statSync(dir); } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new StasisError(ErrorCodes.BAD_IMAGE, `${dir}: no such directory`);
    throw ioError(dir, 'read images directory', e);
  }
  if (!st.isDirectory()) throw new StasisError(ErrorCodes.BAD_IMAGE, `${dir}: not a directory`);
  const fd = openLocked(dir, false, 'restore');
  return { close: () => fs.closeSync(fd) };
}
