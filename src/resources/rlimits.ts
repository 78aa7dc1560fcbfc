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
