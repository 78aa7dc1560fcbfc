// Resource limits. Read from /proc/PID/limits, which anyone may read (prlimit64
// on another user's process needs CAP_SYS_RESOURCE, which root often lacks);
// set on restore with prlimit64 while the task still has our credentials.
import * as fs from 'node:fs';
import { abi, sys, sysTry, addressOf } from '../sys';
import { StasisError, ErrorCodes } from '../errors';
import type { Msg } from '../images/schema';
import { defineUnit } from '../unit/unit';
import type { RestoreCtx, TaskRestore } from '../unit/restore-ctx';

const { RLIMIT64, RLIMIT_NLIMITS, RLIM_INFINITY, RLIMIT_NAMES, ERRNO } = abi;

/** /proc/PID/limits: "%-25s %-20s %-20s %-10s" lines, in RLIMIT_* order after a header. */
export function parseLimits(text: string): Msg<'rlimit_entry'>[] {
  const lines = text.split('\n').slice(1).filter((l) => l.trim());
  const val = (s: string) => (s === 'unlimited' ? RLIM_INFINITY : BigInt(s));
  const out = lines.map((l) => ({ cur: val(l.slice(26, 47).trim()), max: val(l.slice(47, 68).trim()) }));
  if (out.length < RLIMIT_NLIMITS) throw new StasisError(ErrorCodes.UNSUPPORTED, `/proc limits: ${out.length} limits, expected ${RLIMIT_NLIMITS}`);
  return out.slice(0, RLIMIT_NLIMITS);
}

/**
 * Set every limit from outside (prlimit64 on the task). Raising a hard limit
 * needs CAP_SYS_RESOURCE: without it, keep the current hard limit, clamp the
 * soft one, and say so.
 */
function restoreRlimits(ctx: RestoreCtx, tr: TaskRestore): void {
  const list = tr.img.threads[0].core.tc?.rlimits?.rlimits ?? [];
  const pid = tr.task.pid;
  const cur = Buffer.alloc(RLIMIT64.size);
  list.forEach((l, res) => {
    sys('prlimit64', pid, res, 0, addressOf(cur));
    const now = RLIMIT64.decode(cur);
    if (now.cur === l.cur && now.max === l.max) return;
    const r = sysTry('prlimit64', pid, res, addressOf(RLIMIT64.encode(l)), 0);
    if (r === -ERRNO.EPERM) {
      const soft = l.cur < now.max ? l.cur : now.max;
      sys('prlimit64', pid, res, addressOf(RLIMIT64.encode({ cur: soft, max: now.max })), 0);
      ctx.warnings.push(`rlimit ${RLIMIT_NAMES[res] ?? res}: hard limit ${l.max} could not be restored (needs CAP_SYS_RESOURCE); kept ${now.max}`);
    } else if (r < 0) {
      sys('prlimit64', pid, res, addressOf(RLIMIT64.encode(l)), 0); // throws with the errno
    }
  });
}

export const rlimitsUnit = defineUnit({
  name: 'rlimits',
  dumpPhases: [{
    name: 'rlimits', after: ['parasite'], before: ['write-core'],
    each(_ctx, pd) { pd.core.get(pd.pid)!.tc!.rlimits = { rlimits: parseLimits(fs.readFileSync(`/proc/${pd.pid}/limits`, 'utf8')) }; },
  }],
  // A lowered RLIMIT_NOFILE must not stop files from reaching their numbers.
  restorePhases: [{ name: 'rlimits', after: ['files'], each: (ctx, tr) => restoreRlimits(ctx, tr) }],
});
