// Big restores fill pages on two threads. Copying 1 GiB from a pages file into
// a task (pread, UFFDIO_COPY) is ~265 ms on one thread here and ~140 ms on two
// (bench/fixtures/floor.c): the kernel's page allocation and the copy both
// scale with cores. The restore's thread and one helper thread
// (fill-worker.ts, started on the first big fill and kept for the rest of
// the command) claim 16 MiB chunks from a shared table (fill-jobs.ts) until
// none is left: a helper still starting (~25 ms: its own Node context and
// the sys layer) only takes what the restore's thread has not reached yet.
// Only chunks going to UFFDIO_COPY VMAs of an eager restore (a lazy one
// checks each chunk of the digest as it reads it: fill.ts's other paths).
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Worker } from 'node:worker_threads';
import { uffdCopy, addressOf } from '../../sys';
import { StasisError, ErrorCodes } from '../../errors';
import { startThread } from '../../threads';
import { log } from '../../log';
import { newBatch, runJobs } from './fill-jobs';

/** Below this much to copy one thread does it all: the helper's start would cost more than it saves. */
export const PARALLEL_MIN_BYTES = 64 << 20;
/** A batch that made no progress for this long: the helper is taken for dead. */
const STALL_MS = 20000;

let helper: Worker | null | undefined;

function fillHelper(): Worker | null {
  if (helper !== undefined) return helper;
  try {
    helper = startThread(path.join(__dirname, 'fill-worker.js'), 'page filling thread').worker;
  } catch (e) {
    log.info(`no page filling thread (${(e as Error).message}): one thread fills`);
    helper = null;
  }
  return helper;
}

export type FillJob = [fd: number, off: number, dst: bigint, len: number];

/**
 * Run `jobs` (each read from its fd at off, copied to dst by UFFDIO_COPY on
 * `uffd`) on this thread and the helper; `buf` is this thread's buffer.
 * Returns each job's result: bytes copied, or -errno (-1: a short read) —
 * the caller finishes those that did not copy whole another way.
 */
export function fillInParallel(jobs: FillJob[], uffd: number, buf: Buffer): Int32Array {
  const b = newBatch(jobs, uffd);
  const h = fillHelper();
  h?.postMessage(b);
  // Tests: let the helper take the first chunk (it would find none left in a small restore).
  if (h && process.env.STASIS_FILL_WAIT_HELPER) Atomics.wait(b.ctl, 0, 0, 10000);
  const mine = runJobs(b, (fd, off, len) => fs.readSync(fd, buf, 0, len, off), (u, dst, len) => uffdCopy(u, dst, addressOf(buf), len));
  // The helper's last chunks.
  let done = Atomics.load(b.ctl, 1);
  let since = Date.now();
  while (done < jobs.length) {
    Atomics.wait(b.ctl, 1, done, 1000);
    const now = Atomics.load(b.ctl, 1);
    if (now !== done) { done = now; since = Date.now(); continue; }
    if (Date.now() - since > STALL_MS) {
      // Taken for dead: never given another batch (what it held is the restore's failure).
      helper = null;
      throw new StasisError(ErrorCodes.RESTORE_FAILED, `the page filling thread copied nothing for ${STALL_MS / 1000} s`);
    }
  }
  log.debug(`pages by UFFDIO_COPY: ${jobs.length} chunks, ${jobs.length - mine} of them by the helper thread`);
  return b.results;
}
