// criu's statistics files in the work directory: stats-dump after a dump,
// stats-restore after a restore (podman puts stats-dump into its export
// archive and reads both for --print-stats). A service image: IMG_SERVICE
// magic, STATS magic, then one stats_entry (u32 length, message).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { encode } from '../images/codec';
import { MAGIC, IMG_SERVICE_MAGIC } from '../images/magic';
import type { Msg } from '../images/schema';
import type { DumpResult } from '../dump/dump';
import type { RestoreResult } from '../restore/restore';

const us = (ms: number | undefined) => Math.min(0xffffffff, Math.round((ms ?? 0) * 1000));

function write(file: string, entry: Msg<'stats_entry'>): void {
  const body = encode('stats_entry', entry);
  const head = Buffer.alloc(12);
  head.writeUInt32LE(IMG_SERVICE_MAGIC, 0);
  head.writeUInt32LE(MAGIC.STATS, 4);
  head.writeUInt32LE(body.length, 8);
  fs.writeFileSync(file, Buffer.concat([head, body]), { mode: 0o600 });
}

/** stats-dump: times in microseconds, as criu's (memory: our memory phase, dumping and writing together). */
export function writeDumpStats(workDir: string, r: DumpResult): void {
  write(path.join(workDir, 'stats-dump'), {
    dump: {
      freezing_time: us(r.timings.freeze), frozen_time: us(r.frozenMs), memdump_time: us(r.timings.memory), memwrite_time: 0,
      pages_scanned: BigInt(r.pages), pages_skipped_parent: 0n, pages_written: BigInt(r.pages), pages_lazy: 0n,
    },
  });
}

/** stats-restore: forking (making the tree) and the whole restore, in microseconds. */
export function writeRestoreStats(workDir: string, r: RestoreResult): void {
  write(path.join(workDir, 'stats-restore'), {
    restore: { pages_compared: 0n, pages_skipped_cow: 0n, forking_time: us((r.timings.clone ?? 0) + (r.timings.tree ?? 0)), restore_time: us(r.ms) },
  });
}
