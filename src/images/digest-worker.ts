// A summing thread of the digest's pool (hash-pool.ts): each job is one
// chunk of a file — a byte range, read back from the page cache (a dump's
// pages file being written, or a restore's pages file being verified) and
// summed (CRC-32 or SHA-256, as digest.ts says for the file), on another core
// than the dump's or restore's thread. That thread is blocked in synchronous
// calls most of the time, so results go back through a MessagePort it can
// read synchronously, with a shared counter it can wait on.
import * as fs from 'node:fs';
import { parentPort, workerData, type MessagePort } from 'node:worker_threads';
import { chunkSum, type ChunkAlg } from './chunk-sum';

/** A chunk: [off, off+len) of the file at `path` (opened here) or of `fd` (the caller's, shared: threads share fds). */
type Job = { id: number; path?: string; fd?: number; off: number; len: number; alg: ChunkAlg };

const { ctl: sab, port } = workerData as { ctl: SharedArrayBuffer; port: MessagePort };
/** [0]: results posted, [1]: chunks summed (a heartbeat). */
const ctl = new Int32Array(sab);
const buf = Buffer.allocUnsafe(1 << 20);

function post(r: object): void {
  port.postMessage(r);
  Atomics.add(ctl, 0, 1);
  Atomics.notify(ctl, 0);
}

function sumRange(fd: number, off: number, len: number, alg: ChunkAlg): string {
  const h = chunkSum(alg);
  for (let pos = off, end = off + len; pos < end; ) {
    const n = fs.readSync(fd, buf, 0, Math.min(buf.length, end - pos), pos);
    if (n === 0) throw new Error(`the file ends at ${pos} bytes, ${end} were expected`);
    h.update(n === buf.length ? buf : buf.subarray(0, n));
    pos += n;
  }
  Atomics.add(ctl, 1, 1);
  return h.hex();
}

parentPort!.on('message', (j: Job) => {
  let fd = j.fd;
  try {
    if (j.path !== undefined) fd = fs.openSync(j.path, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
    post({ id: j.id, sum: sumRange(fd!, j.off, j.len, j.alg) });
  } catch (e) {
    post({ id: j.id, error: (e as NodeJS.ErrnoException).code ?? (e as Error).message });
  } finally {
    if (j.path !== undefined && fd !== undefined) try { fs.closeSync(fd); } catch { /* already */ }
  }
});
