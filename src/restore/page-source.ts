// Where the lazy server reads the pages it copies in: a pages file of the
// images (lazy restore from local images), or the source's lazy pages server
// (post-copy: restore --lazy-pages --page-server). The server and the arming
// code only ever read through a PageReader, so how pages are fetched stays
// apart from how they are served and checked.
import * as fs from 'node:fs';
import { StasisError, ErrorCodes } from '../errors';
import type { LazyRemote } from '../pageserver/lazy-client';

/** A run of pages still to copy: from file `fd` at `off`, or (fd < 0) from the server as process `vpid`. */
export interface PageRun { start: bigint; fd: number; off: number; vpid?: number }

export interface PageReader {
  /** `len` bytes of the run's pages from `at` into `buf` (from 0); throws if they cannot all be had. `streaming`: in order, more to follow. */
  read(run: PageRun, at: bigint, buf: Buffer, len: number, streaming?: boolean): void;
  /** Check the pages [at, at+len) of a run against the digest ahead of their read, if that is left to the reader (files only). */
  verify?(run: PageRun, at: bigint, len: number): void;
  /** Every page is in: tell the source (post-copy); returns a problem to report, if any. */
  finish(): string | undefined;
  /** Failure: drop the source (post-copy: without telling it all is in). */
  drop(): void;
}

/**
 * Pages from the images' files, and (if given) the source's server. `check`:
 * called before a file's bytes are read for a copy (the digest's chunks a lazy
 * restore checks as it reads: a mismatch throws, and the server kills the tree).
 */
export function pageReader(remote?: LazyRemote, check?: (fd: number, off: number, len: number, streaming: boolean) => void): PageReader {
  return {
    read(run, at, buf, len, streaming = false) {
      const off = run.off + Number(at - run.start);
      if (run.fd < 0) {
        if (!remote || run.vpid === undefined) throw new StasisError(ErrorCodes.INTERNAL, 'lazy pages: a remote run without a lazy pages server');
        remote.read(run.vpid, at, buf, 0, len);
        return;
      }
      check?.(run.fd, off, len, streaming);
      const got = fs.readSync(run.fd, buf, 0, len, off);
      if (got !== len) throw new StasisError(ErrorCodes.BAD_IMAGE, `lazy pages: short read of ${len} bytes at offset ${off} of a pages file (got ${got})`);
    },
    verify(run, at, len) {
      if (run.fd >= 0) check?.(run.fd, run.off + Number(at - run.start), len, false);
    },
    finish: () => remote?.finish(),
    drop: () => remote?.drop(),
  };
}
