// The digest's hashing threads: a small pool of workers (digest-worker.ts),
// one per core (at most MAX_THREADS; a dump leaves one core to its copy),
// each hashing whole chunks of files
// (digest.ts: a pages file's digest is a list of per-chunk sums, so its
// chunks are independent and can be hashed by several threads at once, in
// any order). Jobs go to the thread with the fewest outstanding ones. The
// caller's thread is blocked in synchronous calls most of the time, so it
// collects results synchronously (receiveMessageOnPort) and waits on a
// shared counter (Atomics.wait), never on the event loop.
import * as os from 'node:os';
import * as path from 'node:path';
import type { Worker, MessagePort } from 'node:worker_threads';
import { workerThreads } from '../node-lazy';
import { StasisError, ErrorCodes } from '../errors';
import { startThread } from '../threads';
import type { ChunkAlg } from './chunk-sum';

/** More threads than this buy nothing here: the page copy and the memory bus are shared. */
const MAX_THREADS = 4;
/** A pool that hashed nothing for this long is taken for dead. */
const STALL_MS = 60000;

export type ChunkResult = { id: number; sum: string } | { id: number; error: string };

interface Thread { worker: Worker; port: MessagePort; outstanding: number }

export class HashPool {
  private readonly threads: Thread[] = [];
  /** [0]: results posted, [1]: chunks hashed (a heartbeat). Shared by every thread. */
  private readonly ctl: Int32Array;
  private readonly results = new Map<number, ChunkResult>();
  private readonly owner = new Map<number, Thread>();
  private nextId = 1;

  /** Throws if no thread can be started (the caller hashes on its own thread then). */
  constructor(threads = HashPool.defaultThreads()) {
    const sab = new SharedArrayBuffer(8);
    this.ctl = new Int32Array(sab);
    for (let i = 0; i < threads; i++) {
      const { worker, port } = startThread(path.join(__dirname, 'digest-worker.js'), 'digest thread', sab);
      this.threads.push({ worker, port: port!, outstanding: 0 });
    }
  }

  /**
   * One thread per core, less `reserve` cores left to a thread that works
   * meanwhile (a dump's or lazy server's copy): more runnable threads than
   * cores only take time from that one. At least one.
   */
  static defaultThreads(reserve = 0): number {
    return Math.max(1, Math.min(MAX_THREADS, (os.availableParallelism?.() ?? os.cpus().length) - reserve));
  }

  /** Sum [off, off+len) by `alg` of the file at `file` (opened by the thread) or of our open `fd`; returns the job's id. */
  submit(src: { path: string } | { fd: number }, off: number, len: number, alg: ChunkAlg): number {
    this.collect();
    const id = this.nextId++;
    const t = this.threads.reduce((a, b) => (b.outstanding < a.outstanding ? b : a));
    t.outstanding++;
    this.owner.set(id, t);
    t.worker.postMessage({ id, ...src, off, len, alg });
    return id;
  }

  private collect(): void {
    for (const t of this.threads) {
      for (let m = workerThreads().receiveMessageOnPort(t.port); m; m = workerThreads().receiveMessageOnPort(t.port)) {
        const r = m.message as ChunkResult;
        this.results.set(r.id, r);
        const o = this.owner.get(r.id);
        if (o) o.outstanding--;
        this.owner.delete(r.id);
      }
    }
  }

  /** Wait for job `id`'s result (taken: asked once). */
  result(id: number): ChunkResult {
    let beat = Atomics.load(this.ctl, 1);
    let since = Date.now();
    for (;;) {
      const posted = Atomics.load(this.ctl, 0);
      this.collect();
      const r = this.results.get(id);
      if (r) { this.results.delete(id); return r; }
      Atomics.wait(this.ctl, 0, posted, 1000);
      const b = Atomics.load(this.ctl, 1);
      if (b !== beat) { beat = b; since = Date.now(); }
      else if (Date.now() - since > STALL_MS) throw new StasisError(ErrorCodes.INTERNAL, `the digest threads hashed nothing for ${STALL_MS / 1000} s`);
    }
  }

  /** Job `id`'s result if it has come (taken: asked once), else undefined: never waits. */
  tryResult(id: number): ChunkResult | undefined {
    this.collect();
    const r = this.results.get(id);
    if (r) this.results.delete(id);
    return r;
  }

  close(): void {
    for (const t of this.threads) {
      t.port.close();
      void t.worker.terminate();
    }
    this.threads.length = 0;
  }
}
