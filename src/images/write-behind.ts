// Writing a big pages file behind the copy. A dump's copy of 1 GiB is ~550 ms
// on one thread here: process_vm_readv out of the task (~200) and the write
// into the images' file system (tmpfs ~300: every page of the file is
// allocated then). On two threads the machine does it in ~300
// (bench/fixtures/floor.c). So past WRITE_BEHIND_MIN bytes of a file the
// writes go to one thread of ours (write-behind-worker.ts), the copy reading
// the next chunk meanwhile into a second shared buffer; the copy waits for a
// buffer's write before reading into it again, and a file is closed only
// once its writes are done. A write error is the copy's at its next wait.
// Below that (every small dump) no thread is started: its start (~10 ms)
// would cost more than it saves.
import * as path from 'node:path';
import type { Worker, MessagePort } from 'node:worker_threads';
import { workerThreads } from '../node-lazy';
import { StasisError, ErrorCodes } from '../errors';
import { startThread } from '../threads';

/** Bytes a file gets written in place before its writes go to the thread. */
export const WRITE_BEHIND_MIN = 32 << 20;
/** A thread that finished nothing for this long is taken for dead. */
const STALL_MS = 60000;

let shared: WriteBehind | null | undefined;

export class WriteBehind {
  private readonly ctl = new Int32Array(new SharedArrayBuffer(4));
  private readonly worker: Worker;
  private readonly port: MessagePort;
  private readonly results = new Map<number, string | undefined>();
  private nextId = 1;

  private constructor() {
    // A thread that fails is seen as a stall by wait().
    const { worker, port } = startThread(path.join(__dirname, 'write-behind-worker.js'), 'write-behind thread', this.ctl.buffer as SharedArrayBuffer);
    this.worker = worker;
    this.port = port!;
  }

  /** The process's write-behind thread, started on first use; null if none can be started (writes stay in place). */
  static get(): WriteBehind | null {
    if (shared === undefined) {
      try { shared = new WriteBehind(); } catch { shared = null; }
    }
    return shared;
  }

  /** Write `spans` (offset, length pairs) of `buf` (over a SharedArrayBuffer) to `fd` from `pos`; returns the job. */
  submit(fd: number, pos: number, buf: Buffer, spans: number[]): number {
    if (!(buf.buffer instanceof SharedArrayBuffer) || buf.byteOffset !== 0) throw new StasisError(ErrorCodes.INTERNAL, 'write-behind needs a whole shared buffer');
    const id = this.nextId++;
    this.worker.postMessage({ id, fd, pos, sab: buf.buffer, spans });
    return id;
  }

  private collect(): void {
    for (let m = workerThreads().receiveMessageOnPort(this.port); m; m = workerThreads().receiveMessageOnPort(this.port)) {
      const r = m.message as { id: number; error?: string };
      this.results.set(r.id, r.error);
    }
  }

  /** Wait for job `id`: undefined once written, else the error's code (asked once). */
  wait(id: number): string | undefined {
    let since = Date.now();
    for (;;) {
      const seen = Atomics.load(this.ctl, 0);
      this.collect();
      if (this.results.has(id)) {
        const e = this.results.get(id);
        this.results.delete(id);
        return e;
      }
      if (Atomics.wait(this.ctl, 0, seen, 1000) !== 'timed-out') since = Date.now();
      else if (Date.now() - since > STALL_MS) throw new StasisError(ErrorCodes.INTERNAL, `the write-behind thread wrote nothing for ${STALL_MS / 1000} s`);
    }
  }
}
