// A small proto2 codec driven by the schema in schema.ts: no code generated
// at run time (protobufjs built and compiled every type at start-up, tens of
// milliseconds before anything else could happen). 64-bit integers are
// bigint, bytes are Buffer, enums are numbers; repeated scalars are written
// unpacked (as CRIU writes them) and read packed or not.
import { SCHEMA, type MsgName, type Msg } from './schema';

type Kind =
  | 'int32' | 'uint32' | 'sint32' | 'bool' | 'enum'
  | 'int64' | 'uint64' | 'sint64'
  | 'fixed32' | 'sfixed32' | 'float' | 'fixed64' | 'sfixed64' | 'double'
  | 'string' | 'bytes' | 'message';

interface Field {
  name: string;
  num: number;
  label: 'required' | 'optional' | 'repeated';
  kind: Kind;
  /** Wire type of one value (packed repeated fields come as 2). */
  wire: 0 | 1 | 2 | 5;
  msg?: string;
}

interface Compiled { name: string; fields: Field[]; byNum: Map<number, Field> }

const WIRE: Record<Kind, 0 | 1 | 2 | 5> = {
  int32: 0, uint32: 0, sint32: 0, bool: 0, enum: 0, int64: 0, uint64: 0, sint64: 0,
  fixed32: 5, sfixed32: 5, float: 5, fixed64: 1, sfixed64: 1, double: 1, string: 2, bytes: 2, message: 2,
};

export class CodecError extends Error {}

const compiled = new Map<string, Compiled>();

/** The parsed form of one message of the schema (cached). */
function compile(name: string): Compiled {
  const have = compiled.get(name);
  if (have) return have;
  const spec = (SCHEMA.messages as Record<string, Record<string, string>>)[name];
  if (!spec) throw new CodecError(`unknown message ${name}`);
  const fields: Field[] = [];
  for (const [fname, s] of Object.entries(spec)) {
    const [label, type, num] = s.split(' ');
    let kind: Kind;
    let msg: string | undefined;
    if (type in SCHEMA.messages) { kind = 'message'; msg = type; }
    else if (type in SCHEMA.enums) kind = 'enum';
    else if (type in WIRE) kind = type as Kind;
    else throw new CodecError(`${name}.${fname}: unknown type ${type}`);
    fields.push({ name: fname, num: Number(num), label: label as Field['label'], kind, wire: WIRE[kind], msg });
  }
  fields.sort((a, b) => a.num - b.num);
  const c = { name, fields, byNum: new Map(fields.map((f) => [f.num, f])) };
  compiled.set(name, c);
  return c;
}

// ---------------------------------------------------------------- encoding

class Writer {
  buf = Buffer.allocUnsafe(256);
  len = 0;
  private room(n: number): void {
    if (this.len + n <= this.buf.length) return;
    const b = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.len + n));
    this.buf.copy(b, 0, 0, this.len);
    this.buf = b;
  }
  varint(v: bigint | number): void {
    // Numbers below 2^31 take the fast path; everything else goes through bigint.
    if (typeof v === 'number' && v >= 0 && v < 0x80000000) {
      this.room(5);
      while (v > 0x7f) { this.buf[this.len++] = (v & 0x7f) | 0x80; v >>>= 7; }
      this.buf[this.len++] = v;
      return;
    }
    let x = BigInt.asUintN(64, BigInt(v));
    this.room(10);
    while (x > 0x7fn) { this.buf[this.len++] = Number(x & 0x7fn) | 0x80; x >>= 7n; }
    this.buf[this.len++] = Number(x);
  }
  tag(num: number, wire: number): void { this.varint(num * 8 + wire); }
  fixed32(v: number): void { this.room(4); this.buf.writeUInt32LE(v >>> 0, this.len); this.len += 4; }
  fixed64(v: bigint): void { this.room(8); this.buf.writeBigUInt64LE(BigInt.asUintN(64, v), this.len); this.len += 8; }
  bytes(b: Uint8Array): void { this.varint(b.length); this.room(b.length); this.buf.set(b, this.len); this.len += b.length; }
  result(): Buffer { return this.buf.subarray(0, this.len); }
}

function bad(where: string, what: string): CodecError {
  return new CodecError(`${where}: ${what}`);
}

function writeValue(w: Writer, f: Field, v: unknown, where: string): void {
  const check = (ok: boolean, want: string) => { if (!ok) throw bad(where, `${f.name} must be ${want}, got ${typeof v === 'bigint' ? `${v}n` : JSON.stringify(v)}`); };
  switch (f.kind) {
    case 'int32': case 'enum':
      check(typeof v === 'number' && Number.isInteger(v) && v >= -0x80000000 && v <= 0x7fffffff, 'an int32');
      w.varint(v as number); return; // negative: sign-extended to 64 bits, as protobuf does
    case 'uint32':
      check(typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= 0xffffffff, 'a uint32');
      w.varint(v as number); return;
    case 'sint32': {
      check(typeof v === 'number' && Number.isInteger(v) && v >= -0x80000000 && v <= 0x7fffffff, 'an int32');
      const n = v as number;
      w.varint(((n << 1) ^ (n >> 31)) >>> 0); return;
    }
    case 'bool': check(typeof v === 'boolean', 'a boolean'); w.varint(v ? 1 : 0); return;
    case 'int64': case 'uint64':
      check(typeof v === 'bigint', 'a bigint'); w.varint(v as bigint); return;
    case 'sint64': {
      check(typeof v === 'bigint', 'a bigint');
      const n = BigInt.asIntN(64, v as bigint);
      w.varint(BigInt.asUintN(64, (n << 1n) ^ (n >> 63n))); return;
    }
    case 'fixed32': case 'sfixed32': check(typeof v === 'number', 'a number'); w.fixed32(v as number); return;
    case 'float': { check(typeof v === 'number', 'a number'); const b = Buffer.alloc(4); b.writeFloatLE(v as number); w.fixed32(b.readUInt32LE(0)); return; }
    case 'fixed64': case 'sfixed64': check(typeof v === 'bigint', 'a bigint'); w.fixed64(v as bigint); return;
    case 'double': { check(typeof v === 'number', 'a number'); const b = Buffer.alloc(8); b.writeDoubleLE(v as number); w.fixed64(b.readBigUInt64LE(0)); return; }
    case 'string': check(typeof v === 'string', 'a string'); w.bytes(Buffer.from(v as string, 'utf8')); return;
    case 'bytes': check(v instanceof Uint8Array, 'a Buffer'); w.bytes(v as Uint8Array); return;
    case 'message': {
      check(typeof v === 'object' && v !== null, 'an object');
      const inner = new Writer();
      writeMessage(inner, compile(f.msg!), v as Record<string, unknown>, `${where}.${f.name}`);
      w.bytes(inner.result());
    }
  }
}

function writeMessage(w: Writer, c: Compiled, obj: Record<string, unknown>, where: string): void {
  for (const key of Object.keys(obj)) {
    if (obj[key] !== undefined && !c.fields.some((f) => f.name === key)) throw bad(where, `${c.name} has no field ${key}`);
  }
  for (const f of c.fields) {
    const v = obj[f.name];
    if (v === undefined) {
      if (f.label === 'required') throw bad(where, `required field ${c.name}.${f.name} is missing`);
      continue;
    }
    if (f.label === 'repeated') {
      if (!Array.isArray(v)) throw bad(where, `${f.name} must be an array`);
      for (const x of v) { w.tag(f.num, f.wire); writeValue(w, f, x, where); }
    } else {
      w.tag(f.num, f.wire);
      writeValue(w, f, v, where);
    }
  }
}

/** Encode one message (no length prefix). Throws CodecError on a wrong or missing field. */
export function encode<N extends MsgName>(name: N, obj: Msg<N>): Buffer {
  const w = new Writer();
  writeMessage(w, compile(name), obj as Record<string, unknown>, name);
  return Buffer.from(w.result());
}

// ---------------------------------------------------------------- decoding

class Reader {
  pos: number;
  constructor(readonly buf: Buffer, start: number, readonly end: number) { this.pos = start; }
  varint(): bigint {
    // Up to 7 bytes (49 bits: every address, size and count in practice) in
    // number arithmetic, one BigInt at the end: a bigint per byte made
    // decoding a pagemap of 50K entries take ~80 ms.
    let n = 0, mul = 1;
    const at = this.pos;
    for (let i = 0; i < 7 && this.pos < this.end; i++) {
      const b = this.buf[this.pos++];
      n += (b & 0x7f) * mul;
      if (!(b & 0x80)) return BigInt(n);
      mul *= 128;
    }
    this.pos = at;
    let x = 0n, shift = 0n;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.end) throw new CodecError('truncated varint');
      const b = this.buf[this.pos++];
      x |= BigInt(b & 0x7f) << shift;
      if (!(b & 0x80)) return BigInt.asUintN(64, x);
      shift += 7n;
    }
    throw new CodecError('varint longer than 10 bytes');
  }
  /** The low 32 bits of a varint, unsigned (int32 and enum values are sign-extended to 10 bytes). */
  low32(): number {
    let n = 0, mul = 1;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.end) throw new CodecError('truncated varint');
      const b = this.buf[this.pos++];
      if (i < 5) n += (b & 0x7f) * mul;
      if (!(b & 0x80)) return n % 0x100000000;
      mul *= 128;
    }
    throw new CodecError('varint longer than 10 bytes');
  }
  /** A varint known to be small (tags, lengths): number arithmetic. */
  small(): number {
    let x = 0, mul = 1;
    for (let i = 0; i < 5; i++) {
      if (this.pos >= this.end) throw new CodecError('truncated varint');
      const b = this.buf[this.pos++];
      x += (b & 0x7f) * mul;
      if (!(b & 0x80)) return x;
      mul *= 128;
    }
    const rest = this.varint(); // a huge length: reported by the caller's bounds check
    return x + Number(rest) * mul;
  }
  take(n: number): Buffer {
    if (n < 0 || this.pos + n > this.end) throw new CodecError(`field of ${n} bytes runs past the end`);
    const b = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return b;
  }
  skip(wire: number): void {
    switch (wire) {
      case 0: this.varint(); return;
      case 1: this.take(8); return;
      case 2: this.take(this.small()); return;
      case 5: this.take(4); return;
      default: throw new CodecError(`unsupported wire type ${wire}`);
    }
  }
}

function readScalar(r: Reader, f: Field): unknown {
  switch (f.kind) {
    case 'int32': case 'enum': return r.low32() | 0;
    case 'uint32': return r.low32();
    case 'sint32': { const n = r.low32(); return (n >>> 1) ^ -(n & 1); }
    case 'bool': return r.varint() !== 0n;
    case 'int64': return BigInt.asIntN(64, r.varint());
    case 'uint64': return r.varint();
    case 'sint64': { const n = r.varint(); return (n >> 1n) ^ -(n & 1n); }
    case 'fixed32': return r.take(4).readUInt32LE(0);
    case 'sfixed32': return r.take(4).readInt32LE(0);
    case 'float': return r.take(4).readFloatLE(0);
    case 'fixed64': return r.take(8).readBigUInt64LE(0);
    case 'sfixed64': return r.take(8).readBigInt64LE(0);
    case 'double': return r.take(8).readDoubleLE(0);
    case 'string': return r.take(r.small()).toString('utf8');
    case 'bytes': return Buffer.from(r.take(r.small()));
    case 'message': {
      const len = r.small();
      const end = r.pos + len;
      if (end > r.end) throw new CodecError(`${f.name}: message of ${len} bytes runs past the end`);
      const v = readMessage(new Reader(r.buf, r.pos, end), compile(f.msg!));
      r.pos = end;
      return v;
    }
  }
}

function readMessage(r: Reader, c: Compiled): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const f of c.fields) if (f.label === 'repeated') out[f.name] = [];
  while (r.pos < r.end) {
    const tag = r.small();
    const num = Math.floor(tag / 8), wire = tag & 7;
    const f = c.byNum.get(num);
    if (!f) { r.skip(wire); continue; }
    if (f.label === 'repeated') {
      const arr = out[f.name] as unknown[];
      if (wire === 2 && f.wire !== 2) {
        // packed
        const len = r.small();
        const end = r.pos + len;
        if (end > r.end) throw new CodecError(`${c.name}.${f.name}: packed field runs past the end`);
        const inner = new Reader(r.buf, r.pos, end);
        while (inner.pos < end) arr.push(readScalar(inner, f));
        r.pos = end;
      } else if (wire === f.wire) {
        arr.push(readScalar(r, f));
      } else throw new CodecError(`${c.name}.${f.name}: wire type ${wire}, expected ${f.wire}`);
    } else {
      if (wire !== f.wire) throw new CodecError(`${c.name}.${f.name}: wire type ${wire}, expected ${f.wire}`);
      out[f.name] = readScalar(r, f);
    }
  }
  for (const f of c.fields) {
    if (f.label === 'required' && out[f.name] === undefined) throw new CodecError(`${c.name}: required field ${f.name} is missing`);
  }
  return out;
}

/** Decode one message from `buf[start, end)`. Throws CodecError on malformed input. */
export function decode<N extends MsgName>(name: N, buf: Buffer, start = 0, end = buf.length): Msg<N> {
  return readMessage(new Reader(buf, start, end), compile(name)) as Msg<N>;
}

/** Field names, numbers, labels and types of a message, as the schema declares them (for tests). */
export function describeMessage(name: MsgName): { name: string; num: number; label: string; type: string }[] {
  const spec = (SCHEMA.messages as Record<string, Record<string, string>>)[name];
  return Object.entries(spec).map(([fname, s]) => {
    const [label, type, num] = s.split(' ');
    return { name: fname, num: Number(num), label, type };
  });
}
