// Ghosts: files deleted while still in use (an open fd, a mapping, a cwd),
// carried as criu carries them. ghost-file-N.img holds the inode's
// attributes (ghost_file_entry) and what makes it that file again: a regular
// file's contents (whole after the entry, or, when it has holes, its data
// extents alone: a ghost_chunk_entry before the bytes of each), a symlink's
// target, a device node's rdev. Restore makes it again (where it was when
// that path is free), every user opens or maps it, and it is removed again.
//
// Contents are streamed both ways, a buffer at a time: a deleted file may be
// gigabytes long (a sparse one mostly holes), and only its data counts
// against --ghost-limit.
import * as fs from 'node:fs';
import { abi, sys, sysTry, addressOf } from '../sys';
import { encodeImage, framed, type Msg } from '../images/image';
import { decode, CodecError } from '../images/codec';
import { StasisError, ErrorCodes } from '../errors';
import type { DumpCtx } from '../unit/dump-ctx';
import type { RestoreCtx } from '../unit/restore-ctx';

const { SEEK, S_IF, O } = abi;

/** Default --ghost-limit, as criu's: bytes of data (holes are free). */
export const GHOST_LIMIT = 1 << 20;

/** Contents are copied this much at a time. */
const COPY_BYTES = 1 << 20;

/** A run of data of a file: [offset, length]. */
type Extent = [number, number];

/**
 * One ghost image (or, `alias`, another file id of an inode already kept: a
 * remap entry only). `via` (regular files): where its contents are read
 * when the image is written; `extents`: its data runs when it has holes.
 */
export interface Ghost { origId: number; remapId: number; entry: Msg<'ghost_file_entry'>; via?: string; extents?: Extent[]; alias?: boolean }

/**
 * A deleted file's user: `name` it had, `via` a path reaching it
 * (/proc/PID/fd/N, /proc/PID/map_files/A-B, /proc/PID/cwd), `st` its stat,
 * `what` names the user in errors. `opath`: only a path is kept (O_PATH),
 * nothing is opened through it.
 */
export interface GhostUser { name: string; via: string; st: fs.Stats; what: string; opath?: boolean }

const ftype = (mode: number | undefined): number => (mode ?? 0) & S_IF.MT;
const parentOf = (name: string): string => name.slice(0, name.lastIndexOf('/')) || '/';

/** /proc/PID/root of the task a /proc/PID/... path is of: paths as that task sees them (its mount namespace may be its own). */
const taskRoot = (via: string): string => via.replace(/\/(fd\/\d+|cwd|root|map_files\/[0-9a-f]+-[0-9a-f]+)$/, '/root');

/** Directories bigger than this are not searched for another link. */
const MAX_SCAN = 100000;

/**
 * Another name, in the directory `name` was removed from, of the inode `u`
 * reaches (a hard link made before the removal, as a log rotation does):
 * opening it opens the same file, and nothing on disk is made or changed.
 */
export function otherLink(u: GhostUser): string | undefined {
  if (u.st.nlink === 0 || u.st.isDirectory()) return undefined;
  const dir = parentOf(u.name);
  let names: string[];
  try { names = fs.readdirSync(taskRoot(u.via) + dir); } catch { return undefined; }
  if (names.length > MAX_SCAN) return undefined;
  for (const n of names) {
    const p = `${dir === '/' ? '' : dir}/${n}`;
    try {
      const st = fs.lstatSync(taskRoot(u.via) + p);
      if (st.ino === u.st.ino && st.dev === u.st.dev) return p;
    } catch { /* gone meanwhile */ }
  }
  return undefined;
}

function timeval(ms: number): Msg<'timeval'> {
  const us = BigInt(Math.round(ms * 1000));
  return { tv_sec: us / 1000000n, tv_usec: us % 1000000n };
}
const seconds = (t: Msg<'timeval'>): number => Number(t.tv_sec) + Number(t.tv_usec) / 1e6;

/** The data runs of a file with a hole before its end (SEEK_DATA/SEEK_HOLE); undefined when it has none. */
function dataExtents(via: string, size: number): Extent[] | undefined {
  const fd = fs.openSync(via, 'r');
  try {
    const firstHole = sysTry('lseek', fd, 0, SEEK.HOLE);
    if (firstHole < 0 || firstHole >= size) return undefined;
    const out: Extent[] = [];
    for (let off = 0; off < size;) {
      const start = sysTry('lseek', fd, off, SEEK.DATA);
      if (start < 0 || start >= size) break; // ENXIO: only a hole left
      const hole = sysTry('lseek', fd, start, SEEK.HOLE);
      if (hole <= start) throw new StasisError(ErrorCodes.UNSUPPORTED, `${via}: SEEK_HOLE from ${start} failed (${hole}) while mapping a deleted file's data`);
      const end = Math.min(size, hole);
      out.push([start, end - start]);
      off = end;
    }
    return out;
  } finally {
    fs.closeSync(fd);
  }
}

/** A deleted symlink's target, read through an O_PATH fd on the link itself. */
function symlinkTarget(u: GhostUser): string {
  // Following the magic link /proc/PID/fd/N stops at the symlink it names.
  const fd = fs.openSync(u.via, O.PATH);
  try {
    const buf = Buffer.alloc(abi.PATH_MAX);
    const n = sys('readlinkat', fd, addressOf(Buffer.from('\0')), addressOf(buf), buf.length);
    if (n !== u.st.size) throw new StasisError(ErrorCodes.UNSUPPORTED, `${u.what}: deleted symlink ${u.name}: its target (${n} bytes) is not the ${u.st.size} its stat says`);
    return buf.subarray(0, n).toString();
  } finally {
    fs.closeSync(fd);
  }
}

/** Device numbers of the character devices that hold no state (/dev/null...), as this host has them. */
function harmlessRdevs(paths: Iterable<string>): Set<number> {
  const out = new Set<number>();
  for (const p of paths) {
    try { const st = fs.statSync(p); if (st.isCharacterDevice()) out.add(st.rdev); } catch { /* not on this host */ }
  }
  return out;
}

const devName = (rdev: number): string => `${abi.devMajor(rdev)}:${abi.devMinor(rdev)}`;

/** What is kept of a deleted inode of a kind other than a regular file, or a refusal. */
function nodeFields(u: GhostUser, harmless: Iterable<string>): Partial<Msg<'ghost_file_entry'>> {
  const { st } = u;
  if (st.isDirectory() || st.isFIFO()) return {};
  if (st.isSymbolicLink()) return { symlnk_target: symlinkTarget(u) };
  if (st.isCharacterDevice() || st.isBlockDevice()) {
    // Opened again, a node opens its device afresh: only devices that hold no state come back the same.
    if (!u.opath && !(st.isCharacterDevice() && harmlessRdevs(harmless).has(st.rdev))) {
      throw new StasisError(ErrorCodes.UNSUPPORTED, `${u.what}: ${u.name} (deleted) is a device node (${st.isBlockDevice() ? 'block' : 'character'} device ${devName(st.rdev)}) held open; only a deleted node of a stateless device (${[...harmless].join(', ')}) is carried; not supported`);
    }
    return { rdev: st.rdev };
  }
  throw new StasisError(ErrorCodes.UNSUPPORTED, `${u.what}: ${u.name} (deleted) is a ${st.isSocket() ? 'socket file' : 'file of mode 0o' + st.mode.toString(8)}; not supported`);
}

/**
 * Keep the deleted inode `u` reaches as a ghost for file id `id`: one ghost
 * per inode, later users remapped to it. `harmless`: paths of devices a
 * deleted node of may be opened again.
 */
export function dumpGhost(ctx: DumpCtx, u: GhostUser, id: number, ghosts: Ghost[], harmless: Iterable<string>): void {
  const { st } = u;
  // Still linked elsewhere, but not in its directory (otherLink): a copy
  // would be another file than that one.
  if (st.nlink > 0 && !st.isDirectory()) {
    throw new StasisError(ErrorCodes.UNSUPPORTED, `${u.what}: ${u.name} (deleted) still has ${st.nlink} hard link(s) under other names, none in its directory; not supported`);
  }
  // One inode, however many open file descriptions and mappings: one ghost, made again once.
  const same = ghosts.find((x) => !x.alias && x.entry.dev === st.dev && x.entry.ino === BigInt(st.ino));
  if (same) {
    ghosts.push({ ...same, origId: id, alias: true });
    return;
  }
  // Made again where it was: a directory it was in, removed too, is not made for it.
  const parent = parentOf(u.name);
  if (!fs.existsSync(taskRoot(u.via) + parent)) throw new StasisError(ErrorCodes.UNSUPPORTED, `${u.what}: ${u.name} (deleted) was in ${parent}, removed too; not supported`);
  // A directory of /proc, sysfs, a cgroup...: a kernel object, not something mkdir makes again.
  if (st.isDirectory() && abi.KERNEL_OBJECT_FS_MAGICS.includes(fs.statfsSync(u.via).type)) {
    throw new StasisError(ErrorCodes.UNSUPPORTED, `${u.what}: ${u.name} (deleted) is a removed directory of a kernel filesystem (/proc of an ended process, a removed cgroup...); not supported`);
  }
  const entry: Msg<'ghost_file_entry'> = {
    uid: st.uid, gid: st.gid, mode: st.mode, dev: st.dev, ino: BigInt(st.ino),
    atim: timeval(st.atimeMs), mtim: timeval(st.mtimeMs),
  };
  const g: Ghost = { origId: id, remapId: ghosts.filter((x) => !x.alias).length + 1, entry };
  if (st.isFile()) {
    const extents = dataExtents(u.via, st.size);
    const data = extents ? extents.reduce((a, [, len]) => a + len, 0) : st.size;
    const limit = ctx.opts.ghostLimit ?? GHOST_LIMIT;
    if (data > limit) {
      const of = data === st.size ? `${st.size} bytes` : `${data} bytes of data (${st.size} long, the rest holes)`;
      throw new StasisError(ErrorCodes.UNSUPPORTED, `${u.what}: deleted file ${u.name} (deleted) holds ${of}, over the ghost limit of ${limit} (--ghost-limit)`);
    }
    Object.assign(entry, { size: BigInt(st.size), chunks: extents !== undefined });
    Object.assign(g, { via: u.via, extents });
  } else {
    Object.assign(entry, nodeFields(u, harmless));
  }
  ghosts.push(g);
}

/** ghost-file-N.img of a ghost, its contents streamed from the deleted file. */
export function writeGhost(ctx: DumpCtx, g: Ghost): void {
  const out = ctx.out.create(`ghost-file-${g.remapId}.img`);
  try {
    out.write(encodeImage('GHOST_FILE', []));
    out.write(framed('ghost_file_entry', g.entry));
    if (g.via === undefined) return;
    const fd = fs.openSync(g.via, 'r');
    try {
      const buf = Buffer.allocUnsafe(COPY_BYTES);
      const copy = (off: number, len: number): void => {
        for (let done = 0; done < len;) {
          const n = fs.readSync(fd, buf, 0, Math.min(buf.length, len - done), off + done);
          if (n <= 0) throw new StasisError(ErrorCodes.FILE_CHANGED, `${g.via}: deleted file shrank while being read`);
          out.write(buf, 0, n);
          done += n;
        }
      };
      if (!g.extents) copy(0, Number(g.entry.size ?? 0n));
      for (const [off, len] of g.extents ?? []) {
        out.write(framed('ghost_chunk_entry', { len: BigInt(len), off: BigInt(off) }));
        copy(off, len);
      }
    } finally {
      fs.closeSync(fd);
    }
  } finally {
    out.close();
  }
}

/** A ghost image read a piece at a time (each piece checked against the digest when that is left to the reader). */
class GhostReader {
  private readonly fd: number;
  private readonly size: number;
  private off = 0;
  readonly path: string;
  constructor(private readonly ctx: RestoreCtx, private readonly file: string) {
    this.path = ctx.ckpt.images.path(file);
    this.fd = ctx.ckpt.images.open(file);
    this.size = fs.fstatSync(this.fd).size;
    const want = encodeImage('GHOST_FILE', []);
    if (this.size < want.length || !this.read(want.length).equals(want)) throw this.bad('bad magic (not a GHOST_FILE image)');
  }
  get rest(): number { return this.size - this.off; }
  bad(msg: string): StasisError { return new StasisError(ErrorCodes.BAD_IMAGE, `${this.path}: ${msg}`); }
  read(n: number, buf = Buffer.allocUnsafe(n)): Buffer {
    if (n > this.rest) throw this.bad(`truncated at offset ${this.off} (needs ${n} bytes)`);
    for (let got = 0; got < n;) {
      const r = fs.readSync(this.fd, buf, got, n - got, this.off + got);
      if (r <= 0) throw this.bad(`short read at offset ${this.off + got}`);
      got += r;
    }
    this.ctx.ckpt.images.verifyRange(this.file, this.fd, this.off, n);
    this.off += n;
    return buf.subarray(0, n);
  }
  entry<N extends 'ghost_file_entry' | 'ghost_chunk_entry'>(msg: N): Msg<N> {
    const at = this.off;
    const len = this.read(4).readUInt32LE(0);
    try { return decode(msg, this.read(len)); } catch (e) {
      if (e instanceof CodecError) throw this.bad(`entry at offset ${at} does not decode as ${msg}: ${e.message}`);
      throw e;
    }
  }
  /** `len` bytes into `fd` at `at`. */
  copyTo(fd: number, at: number, len: number): void {
    const buf = Buffer.allocUnsafe(Math.min(COPY_BYTES, len));
    for (let done = 0; done < len;) {
      const piece = this.read(Math.min(buf.length, len - done), buf);
      for (let w = 0; w < piece.length;) w += fs.writeSync(fd, piece, w, piece.length - w, at + done + w);
      done += piece.length;
    }
  }
  close(): void { fs.closeSync(this.fd); }
}

/**
 * Make ghost `ghostId` again at `path` (which must be free), with its owner,
 * mode and times; `made` notes it (before anything is written: a failed
 * restore removes what it began).
 */
export function makeGhost(ctx: RestoreCtx, ghostId: number, path: string, made: Map<number, string>): void {
  const r = new GhostReader(ctx, `ghost-file-${ghostId}.img`);
  try {
    if (r.rest === 0) throw r.bad('empty');
    const e = r.entry('ghost_file_entry');
    const type = ftype(e.mode);
    if (type !== S_IF.REG) return makeNode(e, ghostId, path, made, r);
    const size = Number(e.size ?? 0n);
    const fd = fs.openSync(path, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, e.mode & 0o7777);
    made.set(ghostId, path);
    try {
      // Whole contents after the entry, or chunks (an entry, then its bytes) of a sparse file: holes stay holes.
      if (!e.chunks) r.copyTo(fd, 0, r.rest);
      while (e.chunks && r.rest > 0) {
        const c = r.entry('ghost_chunk_entry');
        if (c.off + c.len > (e.size ?? 0n)) throw r.bad(`chunk at ${c.off} (${c.len} bytes) past the file's size ${e.size}`);
        r.copyTo(fd, Number(c.off), Number(c.len));
      }
      if (e.size !== undefined) fs.ftruncateSync(fd, size);
      fs.fchownSync(fd, e.uid, e.gid);
      fs.fchmodSync(fd, e.mode & 0o7777);
      // Last: writing moved them. Microseconds, as the image holds them.
      if (e.mtim) fs.futimesSync(fd, seconds(e.atim ?? e.mtim), seconds(e.mtim));
    } finally {
      fs.closeSync(fd);
    }
  } finally {
    r.close();
  }
}

/** A deleted directory (empty, as it was), FIFO, symlink or device node made again. */
function makeNode(e: Msg<'ghost_file_entry'>, ghostId: number, path: string, made: Map<number, string>, r: GhostReader): void {
  const type = ftype(e.mode);
  const perm = e.mode & 0o7777;
  if (type === S_IF.DIR) fs.mkdirSync(path, perm);
  else if (type === S_IF.LNK) {
    if (e.symlnk_target === undefined) throw r.bad('a symlink without its target');
    fs.symlinkSync(e.symlnk_target, path);
  } else if (type === S_IF.FIFO || type === S_IF.CHR || type === S_IF.BLK) {
    if (type !== S_IF.FIFO && e.rdev === undefined) throw r.bad('a device node without its device number');
    sys('mknodat', abi.AT_FDCWD, addressOf(Buffer.from(`${path}\0`)), type | perm, e.rdev ?? 0);
  } else throw r.bad(`a ghost of mode 0o${e.mode.toString(8)}: not a kind of file stasis makes`);
  made.set(ghostId, path);
  fs.lchownSync(path, e.uid, e.gid);
  // A symlink's own mode is not settable (and means nothing).
  if (type !== S_IF.LNK) fs.chmodSync(path, perm);
  if (e.mtim) fs.lutimesSync(path, seconds(e.atim ?? e.mtim), seconds(e.mtim));
}

/**
 * Ghosts made again are removed (`dirsOnly`: the directories). A directory
 * with rmdir: only if empty, as it was made, so nothing of anyone else's
 * goes with it.
 */
export function removeGhosts(made: Map<number, string>, dirsOnly: boolean): void {
  for (const [id, p] of made) {
    let dir: boolean;
    try { dir = fs.lstatSync(p).isDirectory(); } catch { made.delete(id); continue; }
    if (dir) fs.rmdirSync(p);
    else if (dirsOnly) continue;
    else fs.rmSync(p, { force: true });
    made.delete(id);
  }
}
