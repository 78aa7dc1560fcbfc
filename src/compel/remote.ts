// Remote system calls with their memory arguments: a task driven by a
// parasite (parasite.ts), plus a scratch area in the task where the buffers a
// call reads or fills are laid out. Each call lays out its own buffers from
// the start of the scratch area (a bump allocator reset every call), so no
// caller ever names an offset:
//
//   const old = outBuf(KSIGACTION.size);
//   t.call('rt_sigaction', sig, 0, old, 8);
//   KSIGACTION.decode(old.data);
import { Parasite, type ParasiteOptions } from './parasite';
import { abi, processVmReadv, processVmWritev } from '../sys';
import { StasisError, ErrorCodes, SyscallError } from '../errors';

const { PAGE_SIZE, SYS, AT_FDCWD } = abi;

/** A buffer placed in the task's scratch area for the duration of one call. */
export class RemoteBuf {
  /** Address in the task during the call. */
  addr = 0n;
  /** After the call: what the task left there (out and in-out buffers). */
  data: Buffer = Buffer.alloc(0);
  constructor(
    readonly len: number,
    readonly content: Buffer | ((addrOf: (b: RemoteBuf) => bigint) => Buffer) | undefined,
    readonly out: boolean,
    /** Buffers this one points to: placed first, their addresses given to `content`. */
    readonly deps: RemoteBuf[] = [],
  ) {}
}

/** Bytes the call reads. */
export function inBuf(b: Buffer): RemoteBuf { return new RemoteBuf(b.length, b, false); }
/** Room the call fills; read back into `.data`. */
export function outBuf(len: number): RemoteBuf { return new RemoteBuf(len, undefined, true); }
/** Bytes the call reads and updates. */
export function ioBuf(b: Buffer): RemoteBuf { return new RemoteBuf(b.length, b, true); }
/** A NUL-terminated string. */
export function cstr(s: string): RemoteBuf { return inBuf(Buffer.concat([Buffer.from(s), Buffer.alloc(1)])); }
/**
 * A struct that points to other buffers of the same call (clone_args to its
 * set_tid array, prctl_mm_map to the auxv...): `fill` gets their addresses.
 */
export function linked(len: number, deps: RemoteBuf[], fill: (addrOf: (b: RemoteBuf) => bigint) => Buffer, out = false): RemoteBuf {
  return new RemoteBuf(len, fill, out, deps);
}

export type Arg = number | bigint | RemoteBuf;

const align8 = (n: number) => (n + 7) & ~7;

/**
 * A task we run system calls in. `scratch`/`scratchLen`: an area of the
 * task's memory that is ours (the trampoline's scratch page on restore, a
 * mapping of ours during dump).
 */
export class RemoteTask {
  readonly pid: number;
  p: Parasite;
  constructor(p: Parasite, readonly scratch: bigint, readonly scratchLen: number, readonly trampoline?: Trampoline) {
    this.pid = p.pid;
    this.p = p;
  }

  static prepare(pid: number, scratch: bigint, scratchLen: number, opts: ParasiteOptions = {}): RemoteTask {
    return new RemoteTask(Parasite.prepare(pid, opts), scratch, scratchLen);
  }

  /** A task under construction, driven through a trampoline of ours (a code page, then scratch). */
  static onTrampoline(pid: number, t: Trampoline, opts: ParasiteOptions = {}): RemoteTask {
    return new RemoteTask(Parasite.prepare(pid, { codeAddr: t.code, mode: 'int3', ...opts }), t.scratch, t.scratchLen, t);
  }

  /** Lay out every buffer of one call; returns the used length. */
  private place(args: Arg[]): { bufs: RemoteBuf[]; used: number } {
    const bufs: RemoteBuf[] = [];
    const visit = (b: RemoteBuf) => {
      if (bufs.includes(b)) return;
      for (const d of b.deps) visit(d);
      bufs.push(b);
    };
    for (const a of args) if (a instanceof RemoteBuf) visit(a);
    let used = 0;
    for (const b of bufs) {
      b.addr = this.scratch + BigInt(used);
      used = align8(used + b.len);
    }
    if (used > this.scratchLen) throw new StasisError(ErrorCodes.INTERNAL, `remote call needs ${used} bytes of scratch space, ${this.scratchLen} available`);
    return { bufs, used };
  }

  /** Run a syscall; -errno on failure. */
  callRaw(name: keyof typeof SYS, ...args: Arg[]): bigint {
    const { bufs, used } = this.place(args);
    if (bufs.length) {
      const region = Buffer.alloc(used);
      for (const b of bufs) {
        const c = typeof b.content === 'function' ? b.content((x) => x.addr) : b.content;
        if (c) {
          if (c.length > b.len) throw new StasisError(ErrorCodes.INTERNAL, `remote buffer content of ${c.length} bytes for ${b.len}`);
          c.copy(region, Number(b.addr - this.scratch));
        }
      }
      processVmWritev(this.pid, this.scratch, region);
    }
    const r = this.p.syscallRaw(SYS[name], ...args.map((a) => (a instanceof RemoteBuf ? a.addr : a)));
    const outs = bufs.filter((b) => b.out);
    if (outs.length) {
      const end = Math.max(...outs.map((b) => Number(b.addr - this.scratch) + b.len));
      const back = Buffer.alloc(end);
      processVmReadv(this.pid, this.scratch, back);
      for (const b of outs) {
        const at = Number(b.addr - this.scratch);
        b.data = back.subarray(at, at + b.len);
      }
    }
    return r;
  }

  /** Run a syscall; throws SyscallError on failure. */
  call(name: keyof typeof SYS, ...args: Arg[]): bigint {
    const r = this.callRaw(name, ...args);
    if (r < 0n && r > -4096n) throw new SyscallError(`remote ${name}`, Number(-r), `in task ${this.pid}`);
    return r;
  }

  /** A call returning a small non-negative number (an fd, a count). */
  callNum(name: keyof typeof SYS, ...args: Arg[]): number {
    return Number(this.call(name, ...args));
  }

  /** Open `path` in the task; returns the new fd. */
  open(path: string, flags: number, mode = 0): number {
    return this.callNum('openat', AT_FDCWD, cstr(path), flags, mode);
  }

  /** Put back the task's own code, registers and mask. */
  cure(): void {
    this.p.cure();
  }
}

/** One page of scratch space is what every caller needs. */
export const SCRATCH_LEN = PAGE_SIZE;

/** The restore trampoline: a `syscall; int3` code page, then a scratch page. */
export interface Trampoline { code: bigint; scratch: bigint; scratchLen: number }
export const TRAMPOLINE_PAGES = 2;
export function trampolineAt(code: bigint): Trampoline {
  return { code, scratch: code + BigInt(PAGE_SIZE), scratchLen: SCRATCH_LEN };
}
