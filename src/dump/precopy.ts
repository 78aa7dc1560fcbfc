// The final dump's own copy round. A dump made on a pre-dump (--prev-images-dir
// naming a checkpoint whose writes are tracked) would copy, with the tree
// frozen, every page written since that pre-dump — for a busy process most of
// what it touches, as long ago as the pre-dump was made. Instead the dump first
// runs one more pre-dump round into a directory of its own checkpoint
// (DIR/stasis-precopy.HEX: the tree frozen only to re-arm the tracking, those
// pages copied while it runs), then dumps on that round: frozen, it copies only
// what was written during the round. The chain is criu's: DIR's `parent` link
// names the round, whose `parent` names the pre-dump given; a restore (and
// crit, and check-images) follows it as any chain, and each link is pinned by
// its parent's digest.
//
// Asked for with --pre-copy (not criu's: its dump is one frozen pass). It pays
// when the pre-dump is old and the process busy: what it wrote since is
// copied while it runs. Its own cost: one more short freeze (reading and
// re-arming the write tracking in place, ~35 ms per GiB here) and a round
// more of wall time (bench/predump.ts --pre-copy: 1 GiB, 10% rewritten
// just before, frozen 226 -> 169 ms, wall 233 -> 290 ms).
// Not for page-server or lazy dumps (their pages go elsewhere), nor when the
// parent tracks nothing (a plain dump or a criu pre-dump: the round would
// copy everything twice).
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as crypto from 'node:crypto';
import { dump, type DumpResult } from './dump';
import { preDump } from './predump';
import type { DumpOptions } from '../unit/dump-ctx';
import { TRACK_FILE } from '../resources/memory/track';
import { log } from '../log';

export const PRECOPY_PREFIX = 'stasis-precopy.';

/** Whether a dump with these options makes its own copy round first. */
export function wantsPreCopy(opts: DumpOptions): boolean {
  if (!opts.preCopy || opts.prevImagesDir === undefined || opts.preDump || opts.pageServer || opts.lazyPages || opts.notify) return false;
  return fs.existsSync(path.join(path.resolve(opts.dir, opts.prevImagesDir), TRACK_FILE));
}

/** The parent, as seen from a directory one level below `dir` (relative links stay relative). */
function parentFromRound(prev: string): string {
  return path.isAbsolute(prev) ? prev : path.join('..', prev);
}

/** Other rounds in `dir` (from earlier dumps into it): gone once the new checkpoint is in place. */
function dropOldRounds(dir: string, keep: string): void {
  let names: string[];
  try { names = fs.readdirSync(dir); } catch { return; }
  for (const n of names) {
    if (n.startsWith(PRECOPY_PREFIX) && n !== keep) fs.rmSync(path.join(dir, n), { recursive: true, force: true });
  }
}

/**
 * dump(), with a copy round first when wantsPreCopy(opts). The result is the
 * final dump's, with the round counted in: its frozen time added to
 * `frozenMs` (the tree is frozen twice), its wall time to `ms`, its pages to
 * `pages`/`bytes`, and a 'pre-copy' step (the round's steps as its parts).
 */
export function dumpWithPreCopy(pid: number, opts: DumpOptions): DumpResult {
  if (!wantsPreCopy(opts)) return dump(pid, opts);
  // Failure injection: "pre-copy:STEP" fails the round at a pre-dump step; other points are the dump's.
  const roundFail = opts.failAt?.startsWith('pre-copy:') ? opts.failAt.slice('pre-copy:'.length) : undefined;
  const failAt = roundFail === undefined ? opts.failAt : undefined;
  const name = PRECOPY_PREFIX + crypto.randomBytes(4).toString('hex');
  const round = path.join(opts.dir, name);
  let pre: DumpResult;
  try {
    pre = preDump(pid, { dir: round, prevImagesDir: parentFromRound(opts.prevImagesDir!), failAt: roundFail });
  } catch (e) {
    fs.rmSync(round, { recursive: true, force: true });
    throw e;
  }
  log.info(`pre-copy round: ${pre.pages} pages copied while running, frozen ${pre.frozenMs.toFixed(1)} ms`);
  let r: DumpResult;
  try {
    r = dump(pid, { ...opts, prevImagesDir: name, failAt });
  } catch (e) {
    // A failed dump leaves the tree as it was, and its images directory without this round.
    fs.rmSync(round, { recursive: true, force: true });
    throw e;
  }
  dropOldRounds(opts.dir, name);
  const parts = Object.fromEntries(Object.entries(pre.timings).filter(([k]) => !k.includes('.')).map(([k, v]) => [`pre-copy.${k}`, v]));
  return {
    ...r,
    ms: r.ms + pre.ms,
    frozenMs: r.frozenMs + pre.frozenMs,
    pages: r.pages + pre.pages,
    bytes: r.bytes + pre.bytes,
    imagesBytes: r.imagesBytes + pre.imagesBytes,
    timings: { 'pre-copy': pre.ms, ...parts, ...r.timings },
    remoteCalls: r.remoteCalls + pre.remoteCalls,
    remoteStops: r.remoteStops + pre.remoteStops,
  };
}
