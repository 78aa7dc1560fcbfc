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
import { batchCode, callCodeLength, signalTail, INT3_TAIL } from './batch';
import { abi, processVmReadv, processVmWritev } from '../sys';
import { StasisError, ErrorCodes, remoteResult } from '../errors';

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
/** A call to run in a task: the syscall's name and its arguments (numbers, or buffers in the task's scratch). */
export type RemoteCall = [keyof typeof SYS, ...Arg[]];

const align8 = (n: number) => (n + 7) & ~7;

/** Batches start here in the trampoline's code page, past its `syscall; int3`. */
const BATCH_CODE_OFFSET = 64;

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

  /** Lay out every buffer of some calls from the start of scratch; returns the used length (may exceed scratchLen). */
  private layout(argLists: Arg[][]): { bufs: RemoteBuf[]; used: number } {
    const bufs: RemoteBuf[] = [];
    const visit = (b: RemoteBuf) => {
      if (bufs.includes(b)) return;
      for (const d of b.deps) visit(d);
      bufs.push(b);
    };
    for (const args of argLists) for (const a of args) if (a instanceof RemoteBuf) visit(a);
    let used = 0;
    for (const b of bufs) {
      b.addr = this.scratch + BigInt(used);
      used = align8(used + b.len);
    }
    return { bufs, used };
  }

  /** Lay out every buffer of one call; returns the used length. */
  private place(args: Arg[]): { bufs: RemoteBuf[]; used: number } {
    const p = this.layout([args]);
    if (p.used > this.scratchLen) throw new StasisError(ErrorCodes.INTERNAL, `remote call needs ${p.used} bytes of scratch space, ${this.scratchLen} available`);
    return p;
  }

  /** The buffers' contents into the task, in one write. */
  private writeBufs(bufs: RemoteBuf[], used: number): void {
    if (!bufs.length) return;
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

  /** What the task left in the out buffers (and `extra` bytes at `extraAt`), in one read. */
  private readBufs(bufs: RemoteBuf[], extraAt = 0, extra = 0): Buffer {
    const outs = bufs.filter((b) => b.out);
    const end = Math.max(extraAt + extra, ...outs.map((b) => Number(b.addr - this.scratch) + b.len));
    if (end === 0) return Buffer.alloc(0);
    const back = Buffer.alloc(end);
    processVmReadv(this.pid, this.scratch, back);
    for (const b of outs) {
      const at = Number(b.addr - this.scratch);
      b.data = back.subarray(at, at + b.len);
    }
    return back;
  }

  /** Run a syscall; -errno on failure. */
  callRaw(name: keyof typeof SYS, ...args: Arg[]): bigint {
    const { bufs, used } = this.place(args);
    this.writeBufs(bufs, used);
    const r = this.p.syscallRaw(SYS[name], ...args.map((a) => (a instanceof RemoteBuf ? a.addr : a)));
    this.readBufs(bufs);
    return r;
  }

  /**
   * Calls that do not depend on each other's results, in order; raw results
   * (-errno on failure; every call runs whatever the others returned). On our
   * trampoline they run as one piece of code with one stop (as many as fit
   * in its code page and scratch at a time); elsewhere one by one.
   */
  callMany(calls: RemoteCall[]): bigint[] {
    const out: bigint[] = [];
    for (let i = 0; i < calls.length;) {
      const way = calls.length - i > 1 ? this.batchWay() : undefined;
      const n = way ? this.fitting(calls.slice(i), way.room) : 0;
      out.push(...(n > 1 ? this.runBatch(calls.slice(i, i + n), way!) : [this.callRaw(calls[i][0], ...calls[i].slice(1) as Arg[])]));
      i += Math.max(n, 1);
    }
    return out;
  }

  /** callMany, then a SyscallError for the first call that failed (all of them ran). */
  callAll(calls: RemoteCall[]): bigint[] {
    const rs = this.callMany(calls);
    rs.forEach((r, i) => remoteResult(r, calls[i][0], `in task ${this.pid}`));
    return rs;
  }

  /** How a batch runs in this task, if one can: where its code goes, how it ends, and how it is run. */
  private batchWay(): { at: bigint; room: number; tail: Buffer; run(code: Buffer, calls: number): void } | undefined {
    if (this.trampoline && this.p.trapsOnInt3) {
      const at = this.trampoline.code + BigInt(BATCH_CODE_OFFSET);
      return {
        at, room: PAGE_SIZE - BATCH_CODE_OFFSET - INT3_TAIL.length, tail: INT3_TAIL,
        run: (code, n) => { processVmWritev(this.pid, at, code); this.p.runToTrap(at, n); },
      };
    }
    const t = this.p.batchTarget();
    if (!t) return undefined;
    const tail = signalTail(t.sig, t.fallback);
    return {
      at: t.at, room: t.room - tail.code.length, tail: tail.code,
      run: (code, n) => this.p.runToSignal(code, t, t.at + BigInt(code.length - tail.code.length + tail.stopOffset), n),
    };
  }

  /** How many of `calls`, from the first, fit in one batch of `room` bytes of code (buffers and results in scratch). */
  private fitting(calls: RemoteCall[], room: number): number {
    // Buffer addresses are not known yet: the highest in scratch gives the longest code.
    const high = this.scratch + BigInt(this.scratchLen);
    let code = 0;
    let used = 0;
    let n = 0;
    for (; n < calls.length; n++) {
      const [name, ...args] = calls[n];
      code += callCodeLength({ nr: SYS[name], args: args.map((a) => (a instanceof RemoteBuf ? high : BigInt(a))) });
      // Each call's buffers on their own: at least what the shared layout will need.
      used += this.layout([args]).used;
      if (code > room || used + 8 * (n + 1) > this.scratchLen) break;
    }
    return n;
  }

  private runBatch(calls: RemoteCall[], way: { tail: Buffer; run(code: Buffer, calls: number): void }): bigint[] {
    const { bufs, used } = this.layout(calls.map((c) => c.slice(1) as Arg[]));
    const resultsAt = align8(used);
    const results = this.scratch + BigInt(resultsAt);
    const code = batchCode(calls.map(([name, ...args]) => ({ nr: SYS[name], args: args.map((a) => (a instanceof RemoteBuf ? a.addr : BigInt(a))) })), results, way.tail);
    this.writeBufs(bufs, used);
    way.run(code, calls.length);
    const back = this.readBufs(bufs, resultsAt, 8 * calls.length);
    return calls.map((_c, i) => back.readBigInt64LE(resultsAt + 8 * i));
  }

  /** Run a syscall; throws SyscallError on failure. */
  call(name: keyof typeof SYS, ...args: Arg[]): bigint {
    return remoteResult(this.callRaw(name, ...args), name, `in task ${this.pid}`);
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
