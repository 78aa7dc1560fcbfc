// The command line's output, written straight to fds 1 and 2. process.stdout
// and process.stderr would load Node's net module (a pipe) or tty module (a
// terminal) to print one line: 5-20 ms of a small dump's or restore's time.
import * as fs from 'node:fs';

const pause = new Int32Array(new SharedArrayBuffer(4));

/** All of `text` and a newline to `fd`; a closed fd loses it quietly, as a closed console would. */
export function say(fd: 1 | 2, text: string): void {
  const b = Buffer.from(`${text}\n`);
  let off = 0;
  // A pipe another process made non-blocking may be full for a moment: wait, up to ~10 s.
  for (let waits = 0; off < b.length;) {
    try {
      off += fs.writeSync(fd, b, off, b.length - off);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EAGAIN' || ++waits > 10000) return;
      Atomics.wait(pause, 0, 0, 1);
    }
  }
}
