// CRIU image framing: [u32 IMG_COMMON][u32 kind magic] (inventory: its magic
// alone), then entries, each a u32 length and that many bytes of protobuf,
// optionally followed by a raw payload (pipe data, socket queues, ghost file
// contents: the entry says how long). pages-N.img is raw page data.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { MAGIC, IMG_COMMON_MAGIC, type ImageKind } from './magic';
import { encode, decode, CodecError } from './codec';
import type { MsgName, Msg } from './schema';
import { StasisError, ErrorCodes } from '../errors';
import { abi } from '../sys';
import type { DigestListing } from './digest';

export type { Msg, MsgName } from './schema';

/** Image files hold the task's secrets: owner-only. */
export const IMAGE_MODE = 0o600;

function header(kind: ImageKind): Buffer {
  if (kind === 'INVENTORY') {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(MAGIC.INVENTORY, 0);
    return b;
  }
  const b = Buffer.alloc(8);
  b.writeUInt32LE(IMG_COMMON_MAGIC, 0);
  b.writeUInt32LE(MAGIC[kind], 4);
  return b;
}

/** One entry of an image file: a message of the schema, and raw bytes after it if any. */
export type Part = { [N in MsgName]: { msg: N; entry: Msg<N>; payload?: Buffer } }[MsgName];

/** Entries of one message type as parts. */
export function parts<N extends MsgName>(msg: N, entries: Msg<N>[], payloads?: (Buffer | undefined)[]): Part[] {
  return entries.map((entry, i) => ({ msg, entry, payload: payloads?.[i] }) as Part);
}

function lengthPrefixed(body: Buffer): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32LE(body.length, 0);
  return Buffer.concat([len, body]);
}

/** The bytes of a whole image file. */
export function encodeImage(kind: ImageKind, list: Part[]): Buffer {
  const out: Buffer[] = [header(kind)];
  for (const p of list) {
    let body: Buffer;
    try {
      body = encode(p.msg, p.entry as never);
    } catch (e) {
      if (e instanceof CodecError) throw new StasisError(ErrorCodes.INTERNAL, `encoding ${kind} image: ${e.message}`);
      throw e;
    }
    out.push(lengthPrefixed(body));
    if (p.payload) out.push(p.payload);
  }
  return Buffer.concat(out);
}

function badImage(file: string, msg: string): StasisError {
  return new StasisError(ErrorCodes.BAD_IMAGE, `${file}: ${msg}`);
}

interface RawEntry { start: number; end: number; payload?: Buffer }

/**
 * Split an image file into its entries (checking magic and every length
 * against the file's size); `payloadLen` tells how many raw bytes follow an
 * entry (negative: the rest of the file).
 */
function splitImage(file: string, buf: Buffer, kind: ImageKind, msgAt: (i: number) => MsgName, payloadLen?: (e: Record<string, unknown>, i: number) => number): { msg: MsgName; entry: Record<string, unknown>; payload?: Buffer }[] {
  const want = header(kind);
  if (buf.length < want.length || !buf.subarray(0, want.length).equals(want)) throw badImage(file, `bad magic (not a ${kind} image)`);
  const out: { msg: MsgName; entry: Record<string, unknown>; payload?: Buffer }[] = [];
  let off = want.length;
  while (off < buf.length) {
    if (off + 4 > buf.length) throw badImage(file, `truncated entry header at offset ${off}`);
    const len = buf.readUInt32LE(off);
    off += 4;
    if (len > buf.length - off) throw badImage(file, `truncated entry at offset ${off - 4} (needs ${len} bytes, ${buf.length - off} left)`);
    const msg = msgAt(out.length);
    const raw: RawEntry = { start: off, end: off + len };
    let entry: Record<string, unknown>;
    try {
      entry = decode(msg, buf, raw.start, raw.end) as Record<string, unknown>;
    } catch (e) {
      if (e instanceof CodecError) throw badImage(file, `entry at offset ${off - 4} does not decode as ${msg}: ${e.message}`);
      throw e;
    }
    off += len;
    let payload: Buffer | undefined;
    if (payloadLen) {
      const n0 = payloadLen(entry, out.length);
      const n = n0 < 0 ? buf.length - off : n0;
      if (!Number.isSafeInteger(n) || n > buf.length - off) throw badImage(file, `truncated payload at offset ${off} (needs ${n} bytes, ${buf.length - off} left)`);
      payload = buf.subarray(off, off + n);
      off += n;
    }
    out.push({ msg, entry, payload });
  }
  return out;
}

/**
 * Reads images of one checkpoint directory: every read is checked (magic,
 * framing, required fields); a problem is a BAD_IMAGE error naming the file.
 */
export class ImageReader {
  /**
   * `owners`: the uids whose files are trusted (by default ours and root's);
   * null trusts any owner. Links are never followed. `listing`: the verified
   * digest (digest.ts); then only the files it lists exist.
   */
  constructor(readonly dir: string, private readonly owners: number[] | null = defaultOwners(), private readonly listing?: DigestListing) {}

  path(file: string): string { return path.join(this.dir, file); }

  exists(file: string): boolean { return this.listing ? this.listing.has(file) : fs.existsSync(this.path(file)); }

  /** Open an image file for reading, refusing links and files of untrusted owners. */
  open(file: string): number {
    const p = this.path(file);
    if (this.listing && !this.listing.has(file)) throw badImage(p, 'not listed in the checkpoint\'s digest: not part of this checkpoint');
    let fd: number;
    try {
      fd = fs.openSync(p, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | abi.O.CLOEXEC);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      throw badImage(p, code === 'ENOENT' ? 'missing' : code === 'ELOOP' ? 'is a symbolic link; refusing to follow it' : `cannot read: ${describeIoError(e)}`);
    }
    const st = fs.fstatSync(fd);
    if (this.owners && !this.owners.includes(st.uid)) {
      fs.closeSync(fd);
      throw new StasisError(ErrorCodes.UNSAFE, `${p} is owned by uid ${st.uid}, not by us or root; refusing to trust it (--allow-foreign-images to override)`);
    }
    if (!st.isFile()) {
      fs.closeSync(fd);
      throw badImage(p, 'not a regular file');
    }
    return fd;
  }

  /**
   * Before [off, off+len) of `file`, read through our `fd`, is used: its
   * chunks checked against the digest if their check was left to the reader
   * (lazy restore: digest.ts DeferredChunks); otherwise they were checked
   * before the restore began and this does nothing.
   */
  verifyRange(file: string, fd: number, off: number, len: number, ahead = false): void {
    this.listing?.deferred?.range(file, fd, off, len, ahead);
  }

  /** The chunks left to the reader to check (lazy restore), if any: handed over with the pages (restore/lazy-handover.ts). */
  get deferred(): import('./digest').DeferredChunks | undefined { return this.listing?.deferred; }

  /** The size of an image file, opened as `open` does (a raw file read later is checked now). */
  size(file: string): number {
    const fd = this.open(file);
    try { return fs.fstatSync(fd).size; } finally { fs.closeSync(fd); }
  }

  raw(file: string): Buffer {
    const fd = this.open(file);
    try {
      const data = fs.readFileSync(fd);
      this.listing?.deferred?.data(file, data);
      return data;
    } catch (e) {
      if (e instanceof StasisError) throw e;
      throw badImage(this.path(file), `cannot read: ${describeIoError(e)}`);
    } finally {
      fs.closeSync(fd);
    }
  }

  /** Every entry of a file holding one message type. */
  read<N extends MsgName>(file: string, kind: ImageKind, msg: N): Msg<N>[] {
    return splitImage(this.path(file), this.raw(file), kind, () => msg).map((x) => x.entry as Msg<N>);
  }

  /** A file holding exactly one entry. */
  one<N extends MsgName>(file: string, kind: ImageKind, msg: N): Msg<N> {
    const all = this.read(file, kind, msg);
    if (all.length !== 1) throw badImage(this.path(file), all.length ? `${all.length} entries, expected one` : 'empty');
    return all[0];
  }

  /** A head entry then entries of another type (pagemaps). */
  withHead<H extends MsgName, N extends MsgName>(file: string, kind: ImageKind, head: H, msg: N): { head: Msg<H>; entries: Msg<N>[] } {
    const all = splitImage(this.path(file), this.raw(file), kind, (i) => (i === 0 ? head : msg));
    if (all.length === 0) throw badImage(this.path(file), 'no header entry');
    return { head: all[0].entry as Msg<H>, entries: all.slice(1).map((x) => x.entry as Msg<N>) };
  }

  /** Entries each followed by a raw payload of `len(entry)` bytes (-1: the rest of the file). */
  withPayloads<N extends MsgName>(file: string, kind: ImageKind, msg: N, len: (e: Msg<N>) => number): { entry: Msg<N>; payload: Buffer }[] {
    return splitImage(this.path(file), this.raw(file), kind, () => msg, (e) => len(e as Msg<N>))
      .map((x) => ({ entry: x.entry as Msg<N>, payload: x.payload! }));
  }
}

function defaultOwners(): number[] {
  const me = process.geteuid?.() ?? 0;
  return me === 0 ? [0] : [me, 0];
}

/**
 * Entry by entry through an image whose entries are followed by payloads of
 * their own framing (SysV message queues, semaphore arrays): the caller reads
 * each entry, then its payload.
 */
export class ImageCursor {
  private off: number;
  constructor(readonly file: string, readonly buf: Buffer, kind: ImageKind) {
    const want = header(kind);
    if (buf.length < want.length || !buf.subarray(0, want.length).equals(want)) throw badImage(file, `bad magic (not a ${kind} image)`);
    this.off = want.length;
  }
  get done(): boolean { return this.off >= this.buf.length; }
  /** Bytes not read yet. */
  get rest(): number { return this.buf.length - this.off; }
  bytes(n: number): Buffer {
    if (!Number.isSafeInteger(n) || n < 0 || n > this.buf.length - this.off) throw badImage(this.file, `truncated at offset ${this.off} (needs ${n} bytes)`);
    const b = this.buf.subarray(this.off, this.off + n);
    this.off += n;
    return b;
  }
  /** A u32 length and that many bytes of protobuf. */
  entry<N extends MsgName>(msg: N): Msg<N> {
    const len = this.bytes(4).readUInt32LE(0);
    const at = this.off;
    const body = this.bytes(len);
    try {
      return decode(msg, body);
    } catch (e) {
      if (e instanceof CodecError) throw badImage(this.file, `entry at offset ${at - 4} does not decode as ${msg}: ${e.message}`);
      throw e;
    }
  }
}

/** A length-prefixed message, as entries are framed (to build payloads that hold messages). */
export function framed<N extends MsgName>(msg: N, entry: Msg<N>): Buffer {
  return lengthPrefixed(encode(msg, entry));
}

/** Decode a whole image held in memory (tests, tools). */
export function decodeImage<N extends MsgName>(file: string, buf: Buffer, kind: ImageKind, msg: N): Msg<N>[] {
  return splitImage(file, buf, kind, () => msg).map((x) => x.entry as Msg<N>);
}

/** readImage(dir, file, kind, msg): one-off read (show, tests). */
export function readImage<N extends MsgName>(dir: string, file: string, kind: ImageKind, msg: N): Msg<N>[] {
  return new ImageReader(dir, null).read(file, kind, msg);
}

/** Write a whole image file (owner-only) at `p`, which must not exist yet. */
export function writeImageFile(p: string, kind: ImageKind, list: Part[]): void {
  const data = encodeImage(kind, list);
  const fd = openNew(p);
  try {
    writeAll(fd, data, p);
  } finally {
    fs.closeSync(fd);
  }
}

/** Create a file that must not exist, never through a link; owner-only. */
export function openNew(p: string): number {
  try {
    return fs.openSync(p, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW | abi.O.CLOEXEC, IMAGE_MODE);
  } catch (e) {
    throw ioError(p, 'create', e);
  }
}

export function writeAll(fd: number, data: Buffer, p: string, position?: number): void {
  try {
    let off = 0;
    while (off < data.length) {
      off += fs.writeSync(fd, data, off, data.length - off, position === undefined ? null : position + off);
    }
  } catch (e) {
    throw ioError(p, 'write', e);
  }
}

const ERRNO_WORDS: Record<string, string> = {
  ENOSPC: 'no space left on the device', EDQUOT: 'disk quota exceeded', EACCES: 'permission denied', EPERM: 'not permitted',
  EEXIST: 'already exists', ELOOP: 'is a symbolic link', EROFS: 'read-only file system', ENOENT: 'no such file or directory',
  ENOTDIR: 'a path component is not a directory', EIO: 'I/O error', EISDIR: 'is a directory',
};

/** The cause of a failed file operation, in words. */
export function describeIoError(e: unknown): string {
  const code = (e as NodeJS.ErrnoException)?.code;
  return (code && ERRNO_WORDS[code]) ?? code ?? (e as Error)?.message ?? String(e);
}

/** An I/O failure on an image file as a one-line error naming the file and the cause. */
export function ioError(p: string, what: string, e: unknown): StasisError {
  const code = (e as NodeJS.ErrnoException)?.code;
  return new StasisError(code === 'ENOSPC' || code === 'EDQUOT' ? ErrorCodes.NO_SPACE : ErrorCodes.IO_ERROR,
    `cannot ${what} ${p}: ${describeIoError(e)}`, { cause: e });
}
