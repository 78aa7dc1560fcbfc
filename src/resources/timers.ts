// Interval timers (ITIMER_REAL/VIRTUAL/PROF) read by the parasite.
import { abi, processVmReadv } from '../sys';
import type { Parasite } from '../compel/parasite';
import type { Entry } from '../images/image';

const { ITIMER, ITIMERVAL_SIZE } = abi;

export function dumpItimers(p: Parasite, scratch: bigint): { real: Entry; virt: Entry; prof: Entry } {
  const buf = Buffer.alloc(ITIMERVAL_SIZE);
  const one = (which: number): Entry => {
    p.syscall('getitimer', which, scratch);
    processVmReadv(p.pid, scratch, buf);
    return {
      isec: buf.readBigUInt64LE(0), iusec: buf.readBigUInt64LE(8),
      vsec: buf.readBigUInt64LE(16), vusec: buf.readBigUInt64LE(24),
    };
  };
  return { real: one(ITIMER.REAL), virt: one(ITIMER.VIRTUAL), prof: one(ITIMER.PROF) };
}

// ---------------------------------------------------------------- restore

import type { RestoreCtx, TaskRestore } from '../restore/context';
import type { Decoded } from '../images/image';

export function restoreItimers(_ctx: RestoreCtx, tr: TaskRestore): void {
  const timers = tr.img.threads[0].core.tc.timers;
  if (!timers) return;
  const set = (which: number, e: Decoded) => {
    if (!e) return;
    const b = Buffer.alloc(ITIMERVAL_SIZE);
    b.writeBigUInt64LE(BigInt(e.isec), 0); b.writeBigUInt64LE(BigInt(e.iusec), 8);
    b.writeBigUInt64LE(BigInt(e.vsec), 16); b.writeBigUInt64LE(BigInt(e.vusec), 24);
    if (BigInt(e.vsec) === 0n && BigInt(e.vusec) === 0n) return; // disarmed
    tr.task.call('setitimer', which, tr.task.put(b, 512), 0);
  };
  set(ITIMER.REAL, timers.real);
  set(ITIMER.VIRTUAL, timers.virt);
  set(ITIMER.PROF, timers.prof);
}
