// Threads of ours (worker_threads): the digest's summing pool, the dump's
// write-behind, the restore's page filling helper. Each is started the same
// way: from its own file (NAME-worker.js beside its caller's module, never in
// the bundle), unref'd (it never holds the command up), and with its error
// events logged: its caller waits in Atomics.wait and never sees them, and
// one left unhandled would crash us later.
import * as fs from 'node:fs';
import type { Worker, MessagePort } from 'node:worker_threads';
import { workerThreads } from './node-lazy';
import { log } from './log';

/**
 * A thread running `file` (`what` names it in the log). With `ctl`, it gets
 * workerData { ctl, port }: the shared control words and one end of a
 * MessageChannel, whose other end is returned. Throws if the file is
 * missing (that would only show as an error event, which a blocked caller
 * never sees).
 */
export function startThread(file: string, what: string, ctl?: SharedArrayBuffer): { worker: Worker; port?: MessagePort } {
  if (!fs.existsSync(file)) throw new Error(`${file} is missing`);
  const { MessageChannel, Worker } = workerThreads();
  let port: MessagePort | undefined;
  let worker: Worker;
  if (ctl) {
    const ch = new MessageChannel();
    port = ch.port1;
    worker = new Worker(file, { workerData: { ctl, port: ch.port2 }, transferList: [ch.port2] });
  } else {
    worker = new Worker(file);
  }
  worker.unref();
  worker.on('error', (e) => log.info(`${what}: ${(e as Error).message}`));
  return { worker, port };
}
