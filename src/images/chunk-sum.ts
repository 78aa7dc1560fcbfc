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
  const { crc32 } = zlib();
  let crc = 0;
  return { update: (d) => { crc = crc32(d, crc); }, hex: () => crc32Hex(crc) };
}

/** The sum of `data` (one whole chunk) by `alg`. */
export function sumChunk(alg: ChunkAlg, data: Uint8Array): string {
  const s = chunkSum(alg);
  s.update(data);
  return s.hex();
}
