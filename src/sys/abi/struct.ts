// C struct layouts, declared once by their fields: offsets and size follow
// x86-64's natural alignment (or none, for packed structs), so no offset is
// ever written by hand. encode() fills a Buffer from an object (missing
// fields are zero), decode() reads one back.

export type FieldType =
  | 'u8' | 'u16' | 'u32' | 'i32' | 'u64' | 'i64'
  /** network byte order (ports, IPv4 addresses) */
  | 'be16' | 'be32'
  /** raw bytes of a fixed length */
  | { bytes: number }
  /** a fixed-length array of u32 or u64 */
  | { u32s: number } | { u64s: number };

type Value<T extends FieldType> =
  T extends 'u64' | 'i64' ? bigint :
  T extends { bytes: number } ? Buffer :
  T extends { u32s: number } ? number[] :
  T extends { u64s: number } ? bigint[] : number;

export type StructValue<F extends Record<string, FieldType>> = { -readonly [K in keyof F]: Value<F[K]> };
/** What encode() accepts: any subset of the fields (the rest are zero); 64-bit fields also as numbers. */
export type StructInput<F extends Record<string, FieldType>> = {
  -readonly [K in keyof F]?: F[K] extends 'u64' | 'i64' ? bigint | number : Value<F[K]>;
};

export interface Struct<F extends Record<string, FieldType>> {
  readonly size: number;
  readonly offsets: { readonly [K in keyof F]: number };
  encode(v: StructInput<F>, into?: Buffer, at?: number): Buffer;
  decode(b: Buffer, at?: number): StructValue<F>;
}

function sizeOf(t: FieldType): number {
  if (typeof t === 'object') return 'bytes' in t ? t.bytes : 'u32s' in t ? t.u32s * 4 : t.u64s * 8;
  return { u8: 1, u16: 2, be16: 2, u32: 4, i32: 4, be32: 4, u64: 8, i64: 8 }[t];
}

function alignOf(t: FieldType): number {
  if (typeof t === 'object') return 'bytes' in t ? 1 : 'u32s' in t ? 4 : 8;
  return sizeOf(t);
}

/**
 * Declare a struct. `opts.packed` lays fields out without padding (epoll_event
 * on x86-64); `opts.size` pads the end to a known size (unions, reserved tails).
 */
export function struct<const F extends Record<string, FieldType>>(fields: F, opts: { packed?: boolean; size?: number } = {}): Struct<F> {
  const offsets: Record<string, number> = {};
  let off = 0, maxAlign = 1;
  for (const [name, t] of Object.entries(fields)) {
    const a = opts.packed ? 1 : alignOf(t);
    maxAlign = Math.max(maxAlign, a);
    off = Math.ceil(off / a) * a;
    offsets[name] = off;
    off += sizeOf(t);
  }
  let size = Math.ceil(off / maxAlign) * maxAlign;
  if (opts.size !== undefined) {
    if (opts.size < off) throw new Error(`struct declared size ${opts.size} < ${off}`);
    size = opts.size;
  }
  const entries = Object.entries(fields);
  return {
    size,
    offsets: offsets as Struct<F>['offsets'],
    encode(v, into, at = 0) {
      const b = into ?? Buffer.alloc(size);
      if (into) b.fill(0, at, at + size);
      for (const [name, t] of entries) {
        const x = (v as Record<string, unknown>)[name];
        if (x === undefined) continue;
        const o = at + offsets[name];
        if (typeof t === 'object') {
          if ('bytes' in t) (x as Buffer).copy(b, o, 0, Math.min(t.bytes, (x as Buffer).length));
          else if ('u32s' in t) (x as number[]).slice(0, t.u32s).forEach((w, i) => b.writeUInt32LE(w >>> 0, o + i * 4));
          else (x as bigint[]).slice(0, t.u64s).forEach((w, i) => b.writeBigUInt64LE(BigInt.asUintN(64, w), o + i * 8));
          continue;
        }
        switch (t) {
          case 'u8': b.writeUInt8((x as number) & 0xff, o); break;
          case 'u16': b.writeUInt16LE((x as number) & 0xffff, o); break;
          case 'be16': b.writeUInt16BE((x as number) & 0xffff, o); break;
          case 'u32': b.writeUInt32LE((x as number) >>> 0, o); break;
          case 'be32': b.writeUInt32BE((x as number) >>> 0, o); break;
          case 'i32': b.writeInt32LE(x as number, o); break;
          case 'u64': b.writeBigUInt64LE(BigInt.asUintN(64, BigInt(x as bigint)), o); break;
          case 'i64': b.writeBigInt64LE(BigInt.asIntN(64, BigInt(x as bigint)), o); break;
        }
      }
      return b;
    },
    decode(b, at = 0) {
      const out: Record<string, unknown> = {};
      for (const [name, t] of entries) {
        const o = at + offsets[name];
        if (typeof t === 'object') {
          if ('bytes' in t) out[name] = Buffer.from(b.subarray(o, o + t.bytes));
          else if ('u32s' in t) out[name] = Array.from({ length: t.u32s }, (_, i) => b.readUInt32LE(o + i * 4));
          else out[name] = Array.from({ length: t.u64s }, (_, i) => b.readBigUInt64LE(o + i * 8));
          continue;
        }
        switch (t) {
          case 'u8': out[name] = b.readUInt8(o); break;
          case 'u16': out[name] = b.readUInt16LE(o); break;
          case 'be16': out[name] = b.readUInt16BE(o); break;
          case 'u32': out[name] = b.readUInt32LE(o); break;
          case 'be32': out[name] = b.readUInt32BE(o); break;
          case 'i32': out[name] = b.readInt32LE(o); break;
          case 'u64': out[name] = b.readBigUInt64LE(o); break;
          case 'i64': out[name] = b.readBigInt64LE(o); break;
        }
      }
      return out as StructValue<F>;
    },
  };
}

/** A little-endian array of `n` 32-bit ints (fd pairs, set_tid arrays...). */
export function i32s(values: number[]): Buffer {
  const b = Buffer.alloc(values.length * 4);
  values.forEach((v, i) => b.writeInt32LE(v, i * 4));
  return b;
}

export function u64s(values: bigint[]): Buffer {
  const b = Buffer.alloc(values.length * 8);
  values.forEach((v, i) => b.writeBigUInt64LE(BigInt.asUintN(64, v), i * 8));
  return b;
}

export function readI32s(b: Buffer, n: number): number[] {
  return Array.from({ length: n }, (_, i) => b.readInt32LE(i * 4));
}
