// The sums of a pages file's chunks (digest.ts says which and why): CRC-32 in
// digests since version 3, SHA-256 before. Its own small module: the digest's
// summing threads (digest-worker.ts) load it and nothing else of stasis.
import * as crypto from 'node:crypto';
import { zlib } from '../node-lazy';

export type ChunkAlg = 'sha256' | 'crc32';
/** What a dump writes. */
export const CHUNK_ALG: ChunkAlg = 'crc32';
export const ALG_NAME: Record<ChunkAlg, string> = { sha256: 'SHA-256', crc32: 'CRC-32' };

/** A CRC-32 as the digest writes it: 8 lower-case hex digits. */
export function crc32Hex(crc: number): string {
  return (crc >>> 0).toString(16).padStart(8, '0');
}

/** Incremental sum of one chunk by `alg`. */
export interface ChunkSum { update(data: Uint8Array): void; hex(): string }

export function chunkSum(alg: ChunkAlg): ChunkSum {
  if (alg === 'sha256') {
    const h = crypto.createHash('sha256');
    return { update: (d) => void h.update(d), hex: () => h.digest('hex') };
  }
  const crc32 = zlib().crc32 ?? crc32Js;
  let crc = 0;
  return { update: (d) => { crc = crc32(d, crc); }, hex: () => crc32Hex(crc) };
}

let table: Int32Array | undefined;

/**
 * CRC-32 (IEEE, reflected: zlib's) a byte at a time, for a Node without
 * zlib.crc32 (before 20.15 and 22.2): ~10x slower, the same sums.
 */
export function crc32Js(data: Uint8Array, crc = 0): number {
  if (!table) {
    table = new Int32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0xedb88320 : c >>> 1;
      table[n] = c;
    }
  }
  let c = ~crc;
  for (let i = 0; i < data.length; i++) c = table[(c ^ data[i]) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}

/** The sum of `data` (one whole chunk) by `alg`. */
export function sumChunk(alg: ChunkAlg, data: Uint8Array): string {
  const s = chunkSum(alg);
  s.update(data);
  return s.hex();
}
