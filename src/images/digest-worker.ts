// The dump's hashing thread (see digest.ts): for each job, a file being
// written by the dump, it reads what has been written so far back from the
// page cache and hashes it, on another core than the dump's. The dump's
// thread is blocked in synchronous calls most of the time, so results go back
// through a MessagePort it can read synchronously, with a shared counter it
// can wait on.
import * as fs from 'node:fs';
import * as crypto from 'node:crypto';
import { parentPort, workerData, type MessagePort } from 'node:worker_threads';

interface Job { fd: number; hash: crypto.Hash; pos: number }
type Message = { id: number; path: string } | { id: number; upto: number; last: boolean };

const { ctl: sab, port } = workerData as { ctl: SharedArrayBuffer; port: MessagePort };
/** [0]: results posted, [1]: chunks hashed. */
const ctl = new Int32Array(sab);
const jobs = new Map<number, Job>();
const buf = Buffer.allocUnsafe(4 << 20);

function post(r: object): void {
  port.postMessage(r);
  Atomics.add(ctl, 0, 1);
  Atomics.notify(ctl, 0);
}

function advance(job: Job, upto: number): void {
  while (job.pos < upto) {
    const n = fs.readSync(job.fd, buf, 0, Math.min(buf.length, upto - job.pos), job.pos);
    if (n === 0) throw new Error(`the file ends at ${job.pos} bytes, ${upto} were written`);
    job.hash.update(n === buf.length ? buf : buf.subarray(0, n));
    job.pos += n;
    Atomics.add(ctl, 1, 1);
  }
}

parentPort!.on('message', (m: Message) => {
  const job = jobs.get(m.id);
  try {
    if ('path' in m) {
      jobs.set(m.id, { fd: fs.openSync(m.path, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW), hash: crypto.createHash('sha256'), pos: 0 });
      return;
    }
    if (!job) return; // it failed earlier: reported then
    advance(job, m.upto);
    if (m.last) {
      jobs.delete(m.id);
      fs.closeSync(job.fd);
      post({ id: m.id, size: job.pos, sha256: job.hash.digest('hex') });
    }
  } catch (e) {
    if (job) {
      jobs.delete(m.id);
      try { fs.closeSync(job.fd); } catch { /* already */ }
    }
    post({ id: m.id, error: (e as NodeJS.ErrnoException).code ?? (e as Error).message });
  }
});
