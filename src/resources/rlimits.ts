// Resource limits, read from outside with prlimit64(pid, res, NULL, &old).
import { abi, sys, addressOf } from '../sys';
import type { Entry } from '../images/image';

export function dumpRlimits(pid: number): Entry {
  const buf = Buffer.alloc(abi.RLIMIT64_SIZE);
  const rlimits: Entry[] = [];
  for (let res = 0; res < abi.RLIMIT_NLIMITS; res++) {
    sys('prlimit64', pid, res, 0, addressOf(buf));
    rlimits.push({ cur: buf.readBigUInt64LE(0), max: buf.readBigUInt64LE(8) });
  }
  return { rlimits };
}

// ---------------------------------------------------------------- restore

import type { RestoreCtx, TaskRestore } from '../restore/context';
import type { Decoded } from '../images/image';
import { sysTry } from '../sys';

/**
 * Set every limit from outside (prlimit64 on the task). Raising a hard limit
 * needs CAP_SYS_RESOURCE: without it, keep the current hard limit, clamp the
 * soft one, and say so.
 */
export function restoreRlimits(ctx: RestoreCtx, tr: TaskRestore): void {
  const list: Decoded[] = tr.img.threads[0].core.tc.rlimits?.rlimits ?? [];
  const pid = tr.task.pid;
  const cur = Buffer.alloc(abi.RLIMIT64_SIZE);
  const want = Buffer.alloc(abi.RLIMIT64_SIZE);
  list.forEach((l, res) => {
    sys('prlimit64', pid, res, 0, addressOf(cur));
    const c = cur.readBigUInt64LE(0), m = cur.readBigUInt64LE(8);
    if (c === BigInt(l.cur) && m === BigInt(l.max)) return;
    want.writeBigUInt64LE(BigInt(l.cur), 0);
    want.writeBigUInt64LE(BigInt(l.max), 8);
    const r = sysTry('prlimit64', pid, res, addressOf(want), 0);
    if (r === -1 /* EPERM */) {
      const max = m;
      const soft = BigInt(l.cur) < max ? BigInt(l.cur) : max;
      want.writeBigUInt64LE(soft, 0);
      want.writeBigUInt64LE(max, 8);
      sys('prlimit64', pid, res, addressOf(want), 0);
      ctx.warnings.push(`rlimit ${res}: hard limit ${l.max} could not be restored (needs CAP_SYS_RESOURCE); kept ${max}`);
    } else if (r < 0) {
      sys('prlimit64', pid, res, addressOf(want), 0); // throws with the errno
    }
  });
}
