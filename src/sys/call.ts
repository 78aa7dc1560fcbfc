import { SyscallError } from '../errors';
import { syscall, syscallBig, type Arg } from './native';
import { SYS } from './abi';

type SysName = keyof typeof SYS;

/** Run a syscall by name; throw SyscallError on failure, else return the result. */
export function sys(name: SysName, a: Arg = 0, b: Arg = 0, c: Arg = 0, d: Arg = 0, e: Arg = 0, f: Arg = 0, detail?: string): number {
  const r = syscall(SYS[name], a, b, c, d, e, f);
  if (r < 0 && r > -4096) throw new SyscallError(name, -r, detail);
  return r;
}

/** Run a syscall by name; return -errno instead of throwing (for probes). */
export function sysTry(name: SysName, a: Arg = 0, b: Arg = 0, c: Arg = 0, d: Arg = 0, e: Arg = 0, f: Arg = 0): number {
  return syscall(SYS[name], a, b, c, d, e, f);
}

export function sysBig(name: SysName, a: Arg = 0, b: Arg = 0, c: Arg = 0, d: Arg = 0, e: Arg = 0, f: Arg = 0): bigint {
  const r = syscallBig(SYS[name], a, b, c, d, e, f);
  if (r < 0n && r > -4096n) throw new SyscallError(name, Number(-r));
  return r;
}
