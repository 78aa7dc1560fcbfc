// A second filling thread (fill-pool.ts): takes chunks of pages from a shared
// job table, the restore's thread taking them too, and copies each from its
// pages file into the task by UFFDIO_COPY on our copy of the task's
// userfaultfd (fds are shared by threads). Loads only the sys layer.
import * as fs from 'node:fs';
import { parentPort } from 'node:worker_threads';
import { uffdCopy, addressOf } from '../../sys';
import { runJobs, type FillBatch } from './fill-jobs';

let buf: Buffer | undefined;

parentPort!.on('message', (b: FillBatch) => {
  // Each batch's longest job may be longer than the last one's.
  if (!buf || buf.length < b.maxLen) buf = Buffer.allocUnsafe(b.maxLen);
  runJobs(b, (fd, off, len) => fs.readSync(fd, buf!, 0, len, off), (uffd, dst, len) => uffdCopy(uffd, dst, addressOf(buf!), len));
});
