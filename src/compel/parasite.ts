// The parasite: code run inside a seized task on our behalf (like CRIU's compel).
//
// prepare(task) saves the task's registers, signal mask and the code bytes at an
// executable address; syscall() runs one system call in the task; cure() puts
// all of it back. Every entry point restores on error: a failed remote call
// never leaves our bytes or registers in the victim.
import { ptrace, wait4, abi, type Regs, describeWait, type WaitStatus } from '../sys';
import { readMaps, readStatus, sigmaskFromStatus } from '../proc/proc';
import { StasisError, ErrorCodes, SyscallError } from '../errors';

const { SIG, PTRACE_O } = abi;

/** Signals we block while the parasite runs. SIGTRAP stays deliverable: the
 *  kernel's force_sig() for int3 would otherwise unblock it and reset the task's
 *  SIGTRAP handler to SIG_DFL. */
const BLOCK_ALL_BUT_TRAP = BigInt.asUintN(64, ~(1n << BigInt(SIG.SIGTRAP - 1)));

/** Stops we tolerate (group stops, spurious interrupts) before giving up on one call. */
const MAX_STOPS_PER_CALL = 16;

export type TrapMode = 'int3' | 'syscall-stop';

export interface ParasiteOptions {
  /** Executable address to run at (default: [vdso] start, else the first r-x mapping). */
  codeAddr?: bigint;
  mode?: TrapMode;
  /** codeAddr already holds a `syscall` instruction: use it as is (syscall-stop mode). */
  existingSyscall?: boolean;
  /** ptrace options to keep set along with TRACESYSGOOD. */
  extraOptions?: number;
}

/** Polls before a blocking wait: a remote syscall usually completes within
 *  microseconds, and a blocking wait4 costs a sleep/wake-up round trip. */
const SPIN_POLLS = 200;

export class Parasite {
  readonly pid: number;
  private readonly savedRegs: Regs;
  private readonly savedMask: bigint;
  private readonly codeAddr: bigint;
  private readonly savedCode: bigint;
  private readonly mode: TrapMode;
  private cured = false;
  private codeWritten = true;
  /** Number of remote syscalls run (for benchmarks and tests). */
  calls = 0;

  private constructor(pid: number, regs: Regs, mask: bigint, codeAddr: bigint, savedCode: bigint, mode: TrapMode) {
    this.pid = pid;
    this.savedRegs = regs;
    this.savedMask = mask;
    this.codeAddr = codeAddr;
    this.savedCode = savedCode;
    this.mode = mode;
  }

  /**
   * Take over a seized, stopped task. `codeAddr` may name the executable
   * address to use; by default the first r-x mapping that is not [vsyscall].
   */
  static prepare(pid: number, opts: ParasiteOptions = {}): Parasite {
    const regs = ptrace.getRegs(pid);
    const mask = ptrace.getSigMask(pid);
    let codeAddr = opts.codeAddr;
    if (codeAddr === undefined) {
      // Prefer the start of [vdso]: its ELF header is parsed once at start-up and
      // never executed, so our bytes there are harmless even if we died before
      // putting them back. Otherwise the first r-x mapping, as compel does.
      const maps = readMaps(pid);
      const vma = maps.find((v) => v.path === '[vdso]') ??
        maps.find((v) => (v.prot & 5) === 5 && v.path !== '[vsyscall]');
      if (!vma) throw new StasisError(ErrorCodes.PARASITE, `task ${pid} has no executable mapping to run a remote syscall`);
      codeAddr = vma.start;
    }
    // A SIGTRAP the task ignores would be reset to SIG_DFL by each int3 (see
    // force_sig_info_to_task): use syscall-exit stops instead, which send no signal.
    let mode = opts.mode;
    if (!mode) {
      const ign = sigmaskFromStatus(readStatus(pid), 'SigIgn');
      mode = (ign >> BigInt(SIG.SIGTRAP - 1)) & 1n ? 'syscall-stop' : 'int3';
    }
    // PTRACE_SETOPTIONS replaces every option: a task under seccomp keeps its filters suspended for our calls.
    const seccomp = Number(readStatus(pid).get('Seccomp') ?? 0) !== 0 ? PTRACE_O.SUSPEND_SECCOMP : 0;
    if (mode === 'syscall-stop') ptrace.setOptions(pid, PTRACE_O.TRACESYSGOOD | seccomp | (opts.extraOptions ?? 0));
    const savedCode = ptrace.peekData(pid, codeAddr);
    const p = new Parasite(pid, regs, mask, codeAddr, savedCode, mode);
    // A `syscall` instruction already there (syscall-stop mode needs no int3):
    // nothing to write, nothing to put back.
    if (opts.existingSyscall) {
      if ((savedCode & 0xffffn) !== 0x050fn) throw new StasisError(ErrorCodes.PARASITE, `no syscall instruction at 0x${codeAddr.toString(16)} in task ${pid}`);
      p.codeWritten = false;
      return p;
    }
    try {
      const code = Buffer.alloc(8);
      code.writeBigUInt64LE(savedCode);
      abi.SYSCALL_INT3.copy(code, 0);
      ptrace.pokeData(pid, codeAddr, code.readBigUInt64LE(0));
    } catch (e) {
      p.cure();
      throw e;
    }
    return p;
  }

  /** Where our `syscall; int3` lives in the task. */
  get codeAddress(): bigint { return this.codeAddr; }

  /** The registers the task had when prepared (a copy). */
  get regs(): Regs { return { ...this.savedRegs }; }

  /** Run one system call in the task; returns the raw result (negative = -errno). */
  syscallRaw(nr: number, ...args: (number | bigint)[]): bigint {
    if (this.cured) throw new StasisError(ErrorCodes.PARASITE, 'parasite already cured');
    const r: Regs = { ...this.savedRegs };
    const a = args.map((x) => BigInt.asUintN(64, BigInt(x)));
    r.rax = BigInt(nr);
    r.rdi = a[0] ?? 0n; r.rsi = a[1] ?? 0n; r.rdx = a[2] ?? 0n;
    r.r10 = a[3] ?? 0n; r.r8 = a[4] ?? 0n; r.r9 = a[5] ?? 0n;
    r.rip = this.codeAddr;
    // orig_rax = -1: no syscall restart logic on resume from this stop.
    r.orig_rax = 0xffffffffffffffffn;
    // Between calls the task holds its own registers and mask again, so a
    // dumper killed between two calls leaves a task that resumes unharmed.
    ptrace.setSigMask(this.pid, BLOCK_ALL_BUT_TRAP);
    ptrace.setRegs(this.pid, r);
    this.calls++;
    if (this.mode === 'int3') {
      ptrace.cont(this.pid, 0);
      this.waitFor((ws) => ws.kind === 'stopped' && ws.signal === SIG.SIGTRAP, nr);
    } else {
      const sysStop = (ws: WaitStatus) => ws.kind === 'stopped' && ws.signal === (SIG.SIGTRAP | 0x80);
      ptrace.syscallStep(this.pid);
      this.waitFor(sysStop, nr, true);
      ptrace.syscallStep(this.pid);
      this.waitFor(sysStop, nr, true);
    }
    const after = ptrace.getRegs(this.pid);
    ptrace.setRegs(this.pid, this.savedRegs);
    ptrace.setSigMask(this.pid, this.savedMask);
    return BigInt.asIntN(64, after.rax);
  }

  /** Run one system call; throw SyscallError on failure. */
  syscall(name: keyof typeof abi.SYS, ...args: (number | bigint)[]): bigint {
    const r = this.syscallRaw(abi.SYS[name], ...args);
    if (r < 0n && r > -4096n) throw new SyscallError(`remote ${name}`, Number(-r), `in task ${this.pid}`);
    return r;
  }

  private waitFor(ok: (ws: WaitStatus) => boolean, nr: number, syscallStop = false): void {
    for (let i = 0; i < MAX_STOPS_PER_CALL; i++) {
      let ws = wait4(this.pid, abi.WAIT.WNOHANG);
      for (let spin = 0; ws.kind === 'none' && spin < SPIN_POLLS; spin++) ws = wait4(this.pid, abi.WAIT.WNOHANG);
      if (ws.kind === 'none') ws = wait4(this.pid);
      if (ok(ws)) return;
      if (ws.kind === 'exited' || ws.kind === 'signaled') {
        this.cured = true; // nothing left to cure
        throw new StasisError(ErrorCodes.TASK_DIED, `task ${this.pid} ${describeWait(ws)} during remote syscall ${nr}`);
      }
      if (ws.kind === 'ptrace-event') {
        // A group stop or interrupt arrived meanwhile: carry on with our call.
        if (syscallStop) ptrace.syscallStep(this.pid); else ptrace.cont(this.pid, 0);
        continue;
      }
      if (ws.kind === 'stopped') {
        // A fault in our call (SIGSEGV, SIGBUS...) would repeat forever if resumed: give up.
        throw new StasisError(ErrorCodes.PARASITE,
          `task ${this.pid} got signal ${ws.signal} during remote syscall ${nr}; restoring it`);
      }
    }
    throw new StasisError(ErrorCodes.PARASITE, `task ${this.pid}: too many stops during remote syscall ${nr}`);
  }

  /** Put back code, registers and signal mask. Safe to call twice. */
  cure(): void {
    if (this.cured) return;
    this.cured = true;
    const errors: unknown[] = [];
    const attempt = (f: () => void) => { try { f(); } catch (e) { errors.push(e); } };
    if (this.codeWritten) attempt(() => ptrace.pokeData(this.pid, this.codeAddr, this.savedCode));
    attempt(() => ptrace.setRegs(this.pid, this.savedRegs));
    attempt(() => ptrace.setSigMask(this.pid, this.savedMask));
    if (errors.length) throw errors[0];
  }
}

/** Run `f` with a parasite in `pid`, curing it whatever happens. */
export function withParasite<T>(pid: number, f: (p: Parasite) => T, opts?: ParasiteOptions): T {
  const p = Parasite.prepare(pid, opts);
  try {
    return f(p);
  } finally {
    p.cure();
  }
}
