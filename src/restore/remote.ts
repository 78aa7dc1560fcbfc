// A task under construction, driven by remote syscalls through a trampoline
// (a `syscall; int3` page we mapped) with a scratch page beside it for the
// structs and strings those syscalls read or fill.
import { Parasite, type ParasiteOptions } from '../compel/parasite';
import { abi, processVmReadv, processVmWritev } from '../sys';

export const TRAMPOLINE_PAGES = 2; // code page, then scratch page

export class RemoteTask {
  readonly pid: number;
  readonly trampoline: bigint;
  readonly scratch: bigint;
  p: Parasite;

  constructor(pid: number, trampoline: bigint, opts: ParasiteOptions = {}) {
    this.pid = pid;
    this.trampoline = trampoline;
    this.scratch = trampoline + BigInt(abi.PAGE_SIZE);
    this.p = Parasite.prepare(pid, { codeAddr: trampoline, mode: 'int3', ...opts });
  }

  call(name: keyof typeof abi.SYS, ...args: (number | bigint)[]): bigint {
    return this.p.syscall(name, ...args);
  }

  callRaw(name: keyof typeof abi.SYS, ...args: (number | bigint)[]): bigint {
    return this.p.syscallRaw(abi.SYS[name], ...args);
  }

  /** Copy `data` into the scratch page at `off`; returns its remote address. */
  put(data: Buffer, off = 0): bigint {
    if (off + data.length > abi.PAGE_SIZE) throw new Error(`scratch overflow (${off + data.length} bytes)`);
    processVmWritev(this.pid, this.scratch + BigInt(off), data);
    return this.scratch + BigInt(off);
  }

  putString(s: string, off = 0): bigint {
    return this.put(Buffer.concat([Buffer.from(s), Buffer.alloc(1)]), off);
  }

  get(len: number, off = 0): Buffer {
    const b = Buffer.alloc(len);
    processVmReadv(this.pid, this.scratch + BigInt(off), b);
    return b;
  }

  /** Open `path` in the task; returns the new fd. */
  open(path: string, flags: number, mode = 0): number {
    const AT_FDCWD = -100;
    return Number(this.call('openat', AT_FDCWD, this.putString(path), flags, mode));
  }
}
