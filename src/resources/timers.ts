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
