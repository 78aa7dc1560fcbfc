// The job table two filling threads share (fill-pool.ts, fill-worker.ts):
// chunks of a restore's pages, each [file offset, task address, length] read
// from a pages file and copied in by UFFDIO_COPY. Each thread claims the next
// chunk with an atomic add (so a helper thread that starts late only takes
// what is left), writes its result (bytes copied, or -errno; a read that
// came short is -1) and counts it done. No dependency beyond the language:
// both threads load it.

/** A batch of chunks, in SharedArrayBuffers both threads see. */
export interface FillBatch {
  /** Per job: fd, file offset, task address, length (Float64: exact below 2^53, as user addresses are). */
  jobs: Float64Array;
  /** Per job: bytes copied, or -errno (-1: the file read came short); 0 until done. */
  results: Int32Array;
  /** [0]: next job to claim, [1]: jobs done, [2]: job count. */
  ctl: Int32Array;
  uffd: number;
  /** The longest job (a thread's buffer). */
  maxLen: number;
}

export const JOB_FIELDS = 4;

export function newBatch(jobs: [fd: number, off: number, dst: bigint, len: number][], uffd: number): FillBatch {
  const table = new Float64Array(new SharedArrayBuffer(Math.max(1, jobs.length) * JOB_FIELDS * 8));
  jobs.forEach(([fd, off, dst, len], i) => table.set([fd, off, Number(dst), len], i * JOB_FIELDS));
  const ctl = new Int32Array(new SharedArrayBuffer(12));
  ctl[2] = jobs.length;
  return { jobs: table, results: new Int32Array(new SharedArrayBuffer(Math.max(1, jobs.length) * 4)), ctl, uffd, maxLen: Math.max(0, ...jobs.map((j) => j[3])) };
}

/**
 * Claim and run jobs until none is left; returns how many this thread ran.
 * `read(fd, off, len)`: bytes read into the thread's buffer; `copy(uffd,
 * dst, len)`: uffdCopy from that buffer.
 */
export function runJobs(b: FillBatch, read: (fd: number, off: number, len: number) => number, copy: (uffd: number, dst: bigint, len: number) => number): number {
  let ran = 0;
  for (;;) {
    const i = Atomics.add(b.ctl, 0, 1);
    Atomics.notify(b.ctl, 0);
    if (i >= b.ctl[2]) return ran;
    const at = i * JOB_FIELDS;
    const [fd, off, dst, len] = [b.jobs[at], b.jobs[at + 1], b.jobs[at + 2], b.jobs[at + 3]];
    let r: number;
    try {
      r = read(fd, off, len) === len ? copy(b.uffd, BigInt(dst), len) : -1;
    } catch {
      r = -1;
    }
    Atomics.store(b.results, i, r === 0 ? -1 : r);
    Atomics.add(b.ctl, 1, 1);
    Atomics.notify(b.ctl, 1);
    ran++;
  }
}
