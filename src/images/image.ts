// CRIU image framing: [u32 IMG_COMMON][u32 kind magic] (inventory: its magic
// alone), then entries, each a u32 length and that many bytes of protobuf.
// pages-N.img is raw page data with no header.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type * as protobuf from 'protobufjs';
import { MAGIC, IMG_COMMON_MAGIC, type ImageKind } from './magic';
import { type as pbType, type MessageName } from './schema';
import { StasisError, ErrorCodes } from '../errors';

/** Image files hold the task's secrets: owner-only. */
export const IMAGE_MODE = 0o600;

/**
 * Create the images directory (0700) and any missing parents. Done by hand:
 * Node 20's recursive mkdirSync spins forever under /proc.
 */
export function ensureImageDir(dir: string): void {
  const abs = path.resolve(dir);
  const missing: string[] = [];
  for (let d = abs; ; d = path.dirname(d)) {
    let st: fs.Stats | undefined;
    try { st = fs.statSync(d); } catch { /* missing */ }
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
      throw new StasisError(ErrorCodes.USAGE, `cannot create images directory ${d}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
  }
}

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

/** Protobuf objects as plain JS: 64-bit fields may be given as bigint. */
export type Entry = Record<string, unknown>;

function toPb(v: unknown): unknown {
  if (typeof v === 'bigint') return v.toString();
  if (Array.isArray(v)) return v.map(toPb);
  if (v && typeof v === 'object' && !Buffer.isBuffer(v) && !(v instanceof Uint8Array)) {
    const o: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) if (x !== undefined) o[k] = toPb(x);
    return o;
  }
  return v;
}

export function encodeEntry(msg: MessageName, obj: Entry): Buffer {
  const t = pbType(msg);
  const m = t.fromObject(toPb(obj) as Record<string, unknown>);
  const err = t.verify(m);
  if (err) throw new StasisError(ErrorCodes.BAD_IMAGE, `${msg}: ${err}`);
  const body = t.encode(m).finish();
  const len = Buffer.alloc(4);
  len.writeUInt32LE(body.length, 0);
  return Buffer.concat([len, body]);
}

/**
 * Write a whole image file: header then entries. Created 0600. An entry may
 * carry raw bytes that follow it in the file (pipe data, as CRIU does).
 */
export function writeImage(dir: string, file: string, kind: ImageKind, entries: ([MessageName, Entry] | [MessageName, Entry, Buffer])[]): void {
  const parts = [header(kind), ...entries.flatMap(([m, o, extra]) => (extra ? [encodeEntry(m, o), extra] : [encodeEntry(m, o)]))];
  const fd = fs.openSync(path.join(dir, file), 'w', IMAGE_MODE);
  try {
    fs.fchmodSync(fd, IMAGE_MODE); // a pre-existing file keeps its mode otherwise
    fs.writeSync(fd, Buffer.concat(parts));
  } finally {
    fs.closeSync(fd);
  }
}

/** Decoded entry: 64-bit integers come back as bigint, bytes as Buffer, enums as numbers. */
export type Decoded = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

function fromPb(t: protobuf.Type, m: protobuf.Message): Decoded {
  const o = t.toObject(m, { longs: String, enums: Number, bytes: Buffer as unknown as undefined, defaults: false, arrays: true });
  return convertLongs(t, o);
}

function convertLongs(t: protobuf.Type, o: Record<string, unknown>): Decoded {
  for (const f of t.fieldsArray) {
    const v = o[f.name];
    if (v === undefined) continue;
    const conv = (x: unknown): unknown => {
      if (f.resolvedType && 'fields' in f.resolvedType) return convertLongs(f.resolvedType as protobuf.Type, x as Record<string, unknown>);
      if (['uint64', 'int64', 'sint64', 'fixed64', 'sfixed64'].includes(f.type)) return BigInt(x as string);
      if (f.type === 'bytes') return Buffer.from(x as Uint8Array);
      return x;
    };
    o[f.name] = Array.isArray(v) ? v.map(conv) : conv(v);
  }
  return o as Decoded;
}

/**
 * Read and validate an image: magic, then every entry's length within the
 * file, then protobuf decoding (required fields present). `msgs` gives the
 * message of each entry by position (the last one repeats).
 */
export function readImage(dir: string, file: string, kind: ImageKind, msgs: MessageName[], extraLen?: (e: Decoded) => number): Decoded[] {
  const p = path.join(dir, file);
  let buf: Buffer;
  try {
    buf = fs.readFileSync(p);
  } catch (e) {
    throw new StasisError(ErrorCodes.BAD_IMAGE, `${p}: cannot read: ${(e as Error).message}`);
  }
  const want = header(kind);
  if (buf.length < want.length || !buf.subarray(0, want.length).equals(want)) {
    throw new StasisError(ErrorCodes.BAD_IMAGE, `${p}: bad magic (not a ${kind} image)`);
  }
  const out: Decoded[] = [];
  let off = want.length;
  while (off < buf.length) {
    if (off + 4 > buf.length) throw new StasisError(ErrorCodes.BAD_IMAGE, `${p}: truncated entry header at offset ${off}`);
    const len = buf.readUInt32LE(off);
    off += 4;
    if (off + len > buf.length) throw new StasisError(ErrorCodes.BAD_IMAGE, `${p}: truncated entry at offset ${off - 4} (needs ${len} bytes, ${buf.length - off} left)`);
    const t = pbType(msgs[Math.min(out.length, msgs.length - 1)]);
    let m: protobuf.Message;
    try {
      m = t.decode(buf.subarray(off, off + len));
    } catch (e) {
      throw new StasisError(ErrorCodes.BAD_IMAGE, `${p}: entry at offset ${off - 4} does not decode as ${t.name}: ${(e as Error).message}`);
    }
    const d = fromPb(t, m);
    off += len;
    if (extraLen) {
      // A negative length: the payload is the rest of the file (ghost files).
      const want = extraLen(d);
      const n = want < 0 ? buf.length - off : want;
      if (off + n > buf.length) throw new StasisError(ErrorCodes.BAD_IMAGE, `${p}: truncated payload at offset ${off} (needs ${n} bytes, ${buf.length - off} left)`);
      d.extra = buf.subarray(off, off + n);
      off += n;
    }
    out.push(d);
  }
  return out;
}

export function imageExists(dir: string, file: string): boolean {
  return fs.existsSync(path.join(dir, file));
}
