// The write-behind thread (write-behind.ts): writes spans of a shared buffer
// into a raw image at given file positions, in the order it gets them, and
// says each job is done (or why not). fds are shared by threads.
import * as fs from 'node:fs';
import { parentPort, workerData, type MessagePort } from 'node:worker_threads';

/** `spans`: pairs (offset in the buffer, length), written one after another from `pos`. */
type Job = { id: number; fd: number; pos: number; sab: SharedArrayBuffer; spans: number[] };

const { ctl: sab, port } = workerData as { ctl: SharedArrayBuffer; port: MessagePort };
/** [0]: jobs done. */
const ctl = new Int32Array(sab);

parentPort!.on('message', (j: Job) => {
  let error: string | undefined;
  try {
    const buf = Buffer.from(j.sab);
    let pos = j.pos;
    for (let i = 0; i < j.spans.length; i += 2) {
      const [off, len] = [j.spans[i], j.spans[i + 1]];
      for (let done = 0; done < len; ) done += fs.writeSync(j.fd, buf, off + done, len - done, pos + done);
      pos += len;
    }
  } catch (e) {
    error = (e as NodeJS.ErrnoException).code ?? (e as Error).message;
  }
  port.postMessage({ id: j.id, error });
  Atomics.add(ctl, 0, 1);
  Atomics.notify(ctl, 0);
});
