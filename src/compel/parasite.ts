// The parasite: code run inside a seized task on our behalf (like CRIU's compel).
//
// prepare(task) saves the task's registers and signal mask and gets an
// executable `syscall` to run at; syscall() runs one system call in the task;
// cure() puts everything back. Every entry point restores on error: a failed
// remote call never leaves our bytes or registers in the victim.
//
// Three ways to run a call:
// - 'self-restoring' (the default, for live tasks that must survive us): the
//   code lives in unused bytes at the end of the task's [vdso], one block per
//   thread in use, each a `syscall` followed by code that restores the thread
//   by itself (selfrestore.ts). The tracer stops the task at that syscall's
//   exit; if the tracer is gone (killed at any moment), the task runs the
//   rest of the block instead: it unmaps our scratch page, takes back its own
//   mask and registers and carries on where it was. Between calls the task
//   stays on our code, so a vanished tracer leaves nothing behind at any point.
// - 'int3': `syscall; int3` written at an address of ours (the restore
//   trampoline: those tasks die with us, EXITKILL).
// - 'syscall-stop': syscall-exit stops on an existing `syscall` (the last
//   calls of a restore, after the trampoline is gone).
import * as fs from 'node:fs';
import { ptrace, wait4, abi, type Regs, describeWait, type WaitStatus } from '../sys';
import { readMaps, readStatus, sigmaskFromStatus } from '../proc/proc';
import { StasisError, ErrorCodes, SyscallError, remoteResult } from '../errors';
import { selfRestoreCode, selfRestoreData, vdsoPadding, quietGap, SELF_RESTORE_DATA, type SelfRestoreCode } from './selfrestore';

const { SIG, PTRACE_O, PTRACE_EVENT, SYS, PROT, MAP, ALL_SIGNALS, PAGE_SIZE, SYSCALL_INSN_LEN } = abi;

/** Signals we block while an int3-mode parasite runs. SIGTRAP stays deliverable: the
 *  kernel's force_sig() for int3 would otherwise unblock it and reset the task's
 *  SIGTRAP handler to SIG_DFL. */
const BLOCK_ALL_BUT_TRAP = BigInt.asUintN(64, ~(1n << BigInt(SIG.SIGTRAP - 1)));

/** Signals that end a batch in self-restoring mode, if the task ignores one (see batchTarget). */
const BATCH_SIGNALS = [SIG.SIGURG, SIG.SIGWINCH, SIG.SIGCHLD];

/** A batch is a few hundred syscalls at most: one that has not stopped by then went wrong. */
const BATCH_TIMEOUT_MS = 10000;
const SLEEPER = new Int32Array(new SharedArrayBuffer(4));

/** Stops we tolerate (group stops, spurious interrupts) before giving up on one call. */
const MAX_STOPS_PER_CALL = 16;

/** What a call changes in the call registers, and where they are in user_regs_struct. */
const CALL_REGS = ['rax', 'rdi', 'rsi', 'rdx', 'r10', 'r8', 'r9'] as const;
const CALL_REG_OFFSETS = Object.fromEntries(CALL_REGS.map((r) => [r, abi.USER_REGS_FIELDS.indexOf(r) * 8])) as Record<(typeof CALL_REGS)[number], number>;

/** orig_rax = -1: no syscall restart logic on resume from the stop we set registers in. */
const NO_SYSCALL = 0xffffffffffffffffn;

export type TrapMode = 'int3' | 'syscall-stop' | 'self-restoring';

export interface ParasiteOptions {
  /** Executable address to run at (int3 / syscall-stop modes). */
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

/** Remote system calls run by every parasite of this process (for --timings and benchmarks). */
export const remoteCalls = { count: 0, stops: 0 };

/** Blocks of self-restoring code at the end of one process's [vdso], shared by its threads. */
interface CodeArea {
  tgid: number;
  code: SelfRestoreCode;
  /** Block addresses; owner[i] is the parasite running on block i. */
  blocks: bigint[];
  owner: (Parasite | null)[];
  /** The bytes the blocks cover, put back when the last parasite is cured. */
  saved: Buffer;
  mem: number;
  scratch: bigint;
  scratchLen: number;
  /** An executable page at the end of the scratch mapping for batches (0n: none). */
  batchPage: bigint;
}

/** Two blocks: a leader that stays on its block while one other thread at a time runs calls. */
const BLOCKS = 2;
const areas = new Map<number, CodeArea>();

let blockCode: SelfRestoreCode | undefined;

/**
 * Assemble the self-restoring code now (1-10 ms the first time, on a loaded
 * machine): a dump calls this before it freezes the tree, so that this is not
 * part of the time the tree stands frozen.
 */
export function assembleParasiteCode(): void {
  blockCode ??= selfRestoreCode();
}

/** Write into the task through /proc/PID/mem (FOLL_FORCE: the vdso is read-only), else word by word. */
function writeTask(a: CodeArea, addr: bigint, data: Buffer): void {
  try {
    if (fs.writeSync(a.mem, data, 0, data.length, Number(addr)) === data.length) return;
  } catch { /* a kernel that forbids forced /proc/PID/mem writes: POKEDATA below */ }
  for (let at = 0; at < data.length; at += 8) {
    const word = Buffer.alloc(8);
    if (at + 8 > data.length) word.writeBigUInt64LE(ptrace.peekData(a.tgid, addr + BigInt(at)));
    data.copy(word, 0, at, Math.min(at + 8, data.length));
    ptrace.pokeData(a.tgid, addr + BigInt(at), word.readBigUInt64LE(0));
  }
}

/** The process's code area: the zero tail of its [vdso] if it has room for the blocks. */
function openArea(tgid: number): CodeArea | null {
  const vdso = readMaps(tgid).find((v) => v.path === '[vdso]');
  if (!vdso) return null;
  const code = (blockCode ??= selfRestoreCode());
  const mem = fs.openSync(`/proc/${tgid}/mem`, 'r+');
  try {
    const img = Buffer.alloc(Number(vdso.end - vdso.start));
    const pad = fs.readSync(mem, img, 0, img.length, Number(vdso.start)) === img.length ? vdsoPadding(img) : null;
    // Each block's bytes: zeros, or our code left there by a tracer that vanished.
    const usable = (at: number) => img.subarray(at, at + code.size).every((b) => b === 0) ||
      img.subarray(at, at + code.dataOffset).equals(code.bytes.subarray(0, code.dataOffset));
    if (!pad || pad.len < BLOCKS * code.size || ![...Array(BLOCKS).keys()].every((i) => usable(pad.offset + i * code.size))) {
      fs.closeSync(mem);
      return null;
    }
    const base = vdso.start + BigInt(pad.offset);
    const blocks = Array.from({ length: BLOCKS }, (_, i) => base + BigInt(i * code.size));
    const saved = Buffer.from(img.subarray(pad.offset, pad.offset + BLOCKS * code.size));
    const a: CodeArea = { tgid, code, blocks, owner: blocks.map(() => null), saved, mem, scratch: 0n, scratchLen: 0, batchPage: 0n };
    areas.set(tgid, a);
    return a;
  } catch (e) {
    fs.closeSync(mem);
    throw e;
  }
}

function closeArea(a: CodeArea): void {
  areas.delete(a.tgid);
  try {
    writeTask(a, a.blocks[0], a.saved);
  } finally {
    fs.closeSync(a.mem);
  }
}

export class Parasite {
  readonly pid: number;
  private readonly savedRegs: Regs;
  private readonly savedMask: bigint;
  private readonly codeAddr: bigint;
  private readonly savedCode: bigint;
  private readonly mode: TrapMode;
  private cured = false;
  private codeWritten = true;
  /** Self-restoring mode: the area and our block in it. */
  private area?: CodeArea;
  private block = -1;
  /** Self-restoring mode: the task sits in a syscall-exit stop on our code (not its initial stop). */
  private onOurCode = false;
  /** Self-restoring mode: the call registers, encoded once; each call changes rax and the arguments. */
  private callBuf?: Buffer;
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
   * Take over a seized, stopped task. Without options: self-restoring code in
   * the task's [vdso] (shared with the parasites of its other threads), or, if
   * it has no room there, `syscall; int3` at the start of [vdso] or the first
   * r-x mapping, as compel does.
   */
  static prepare(pid: number, opts: ParasiteOptions = {}): Parasite {
    if (opts.codeAddr === undefined && (opts.mode === undefined || opts.mode === 'self-restoring')) {
      // /proc/PID/status read once: the thread group and the seccomp mode.
      const status = readStatus(pid);
      const tgid = Number(status.get('Tgid') ?? pid);
      const regs = ptrace.getRegs(pid);
      const mask = ptrace.getSigMask(pid);
      const area = areas.get(tgid) ?? openArea(tgid);
      if (area) return Parasite.selfRestoring(pid, area, regs, mask, opts, status);
      if (opts.mode === 'self-restoring') throw new StasisError(ErrorCodes.PARASITE, `task ${pid} has no room in its [vdso] for self-restoring code`);
    }
    return Parasite.legacy(pid, opts);
  }

  private static selfRestoring(pid: number, area: CodeArea, regs: Regs, mask: bigint, opts: ParasiteOptions, status: Map<string, string>): Parasite {
    const k = area.owner.indexOf(null);
    if (k < 0) throw new StasisError(ErrorCodes.INTERNAL, `task ${pid}: more than ${BLOCKS} parasites at once in process ${area.tgid}`);
    const p = new Parasite(pid, regs, mask, area.blocks[k], 0n, 'self-restoring');
    p.area = area;
    p.block = k;
    area.owner[k] = p;
    try {
      // PTRACE_SETOPTIONS replaces every option: a task under seccomp keeps its filters suspended for our calls.
      const seccomp = Number(status.get('Seccomp') ?? 0) !== 0 ? PTRACE_O.SUSPEND_SECCOMP : 0;
      ptrace.setOptions(pid, PTRACE_O.TRACESYSGOOD | seccomp | (opts.extraOptions ?? 0));
      const block = Buffer.from(area.code.bytes);
      selfRestoreData(regs, mask, area.scratch, area.scratchLen).copy(block, area.code.dataOffset);
      writeTask(area, area.blocks[k], block);
      // Registers first: a tracer gone between the two leaves a task on our
      // code with its own mask, which the code copes with; the other order
      // would leave it running with every signal blocked.
      ptrace.setRegs(pid, p.callRegs(SYS.getpid, []));
      ptrace.setSigMask(pid, ALL_SIGNALS);
    } catch (e) {
      p.cure();
      throw e;
    }
    return p;
  }

  private static legacy(pid: number, opts: ParasiteOptions): Parasite {
    const regs = ptrace.getRegs(pid);
    const mask = ptrace.getSigMask(pid);
    let codeAddr = opts.codeAddr;
    if (codeAddr === undefined) {
      // The start of [vdso]: its ELF header is parsed once at start-up and
      // never executed. Otherwise the first r-x mapping, as compel does.
      const maps = readMaps(pid);
      const vma = maps.find((v) => v.path === '[vdso]') ??
        maps.find((v) => (v.prot & (PROT.READ | PROT.EXEC)) === (PROT.READ | PROT.EXEC) && v.path !== '[vsyscall]');
      if (!vma) throw new StasisError(ErrorCodes.PARASITE, `task ${pid} has no executable mapping to run a remote syscall`);
      codeAddr = vma.start;
    }
    // A SIGTRAP the task ignores would be reset to SIG_DFL by each int3 (see
    // force_sig_info_to_task): use syscall-exit stops instead, which send no signal.
    let mode = opts.mode;
    if (!mode || mode === 'self-restoring') {
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

  /** Where our code lives in the task. */
  get codeAddress(): bigint { return this.codeAddr; }

  /** The registers the task had when prepared (a copy). */
  get regs(): Regs { return { ...this.savedRegs }; }

  /** The signal mask the task had when prepared. */
  get mask(): bigint { return this.savedMask; }

  /** The parasite for another thread of the same process: same code, same scratch. */
  forThread(tid: number): Parasite {
    if (tid === this.pid) return this;
    return this.mode === 'self-restoring' ? Parasite.prepare(tid) : Parasite.prepare(tid, { codeAddr: this.codeAddr });
  }

  private callRegs(nr: number, args: (number | bigint)[]): Regs {
    const r: Regs = { ...this.savedRegs };
    const a = args.map((x) => BigInt.asUintN(64, BigInt(x)));
    r.rax = BigInt(nr);
    r.rdi = a[0] ?? 0n; r.rsi = a[1] ?? 0n; r.rdx = a[2] ?? 0n;
    r.r10 = a[3] ?? 0n; r.r8 = a[4] ?? 0n; r.r9 = a[5] ?? 0n;
    r.rip = this.codeAddr;
    r.orig_rax = NO_SYSCALL;
    return r;
  }

  /** Run one system call in the task; returns the raw result (negative = -errno). */
  syscallRaw(nr: number, ...args: (number | bigint)[]): bigint {
    if (this.cured) throw new StasisError(ErrorCodes.PARASITE, 'parasite already cured');
    const r = this.callRegs(nr, args);
    const sysStop = (ws: WaitStatus) => ws.kind === 'stopped' && ws.signal === (SIG.SIGTRAP | 0x80);
    if (this.mode === 'self-restoring') {
      // The task stays on our code between calls: its own registers and mask
      // come back at cure(), or from the code itself if we vanish.
      const buf = (this.callBuf ??= ptrace.encodeRegs(r));
      for (const reg of CALL_REGS) buf.writeBigUInt64LE(r[reg], CALL_REG_OFFSETS[reg]);
      ptrace.setRegsEncoded(this.pid, buf);
      this.calls++;
      remoteCalls.count++;
      remoteCalls.stops++;
      ptrace.syscallStep(this.pid);
      this.waitFor(sysStop, nr, true);
      ptrace.syscallStep(this.pid);
      this.waitFor(sysStop, nr, true);
      this.onOurCode = true;
      return BigInt.asIntN(64, ptrace.peekReg(this.pid, 'rax'));
    }
    // Between calls the task holds its own registers and mask again.
    ptrace.setSigMask(this.pid, BLOCK_ALL_BUT_TRAP);
    ptrace.setRegs(this.pid, r);
    this.calls++;
    remoteCalls.count++;
    remoteCalls.stops++;
    if (this.mode === 'int3') {
      ptrace.cont(this.pid, 0);
      this.waitFor((ws) => ws.kind === 'stopped' && ws.signal === SIG.SIGTRAP, nr);
    } else {
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

  /** Int3 mode: whether runToTrap can run code of ours. */
  get trapsOnInt3(): boolean { return this.mode === 'int3' && !this.cured; }

  /**
   * Int3 mode: run the task from `rip` (code of ours that ends in int3, such
   * as batch.ts writes) until it traps, then put its registers and mask back.
   */
  runToTrap(rip: bigint, calls: number): void {
    if (!this.trapsOnInt3) throw new StasisError(ErrorCodes.INTERNAL, `task ${this.pid}: runToTrap needs an int3-mode parasite`);
    ptrace.setSigMask(this.pid, BLOCK_ALL_BUT_TRAP);
    ptrace.setRegs(this.pid, { ...this.savedRegs, rip, orig_rax: NO_SYSCALL });
    this.calls += calls;
    remoteCalls.count += calls;
    remoteCalls.stops++;
    try {
      ptrace.cont(this.pid, 0);
      this.waitFor((ws) => ws.kind === 'stopped' && ws.signal === SIG.SIGTRAP, -1);
    } finally {
      ptrace.setRegs(this.pid, this.savedRegs);
      ptrace.setSigMask(this.pid, this.savedMask);
    }
  }

  /**
   * Self-restoring mode: where batch code may go (an executable page of the
   * scratch mapping) and the signal that ends a batch, or undefined when
   * batches cannot run here. The signal is one the task ignores (SIG_IGN, or
   * SIG_DFL with an ignoring default), neither blocked by this thread nor
   * pending: raised by our code, it stops the task for us; if we are gone,
   * the kernel drops it, as it would any such signal, and the code goes on
   * into the block's fallback (see selfRestoreCode).
   */
  batchTarget(): { at: bigint; room: number; sig: number; fallback: bigint } | undefined {
    const a = this.area;
    if (this.mode !== 'self-restoring' || this.cured || !a?.batchPage) return undefined;
    // Only the process's one parasite: every block unmaps the scratch mapping
    // (the batch page with it) if we die, so a thread running a batch there
    // while another parasite of its process sits on its block could lose its
    // code under it (SIGSEGV: seen in a dump of a threaded target killed at
    // random, once thread sessions batched their calls).
    if (a.owner.some((o) => o !== null && o !== this)) return undefined;
    const status = readStatus(this.pid);
    const caught = sigmaskFromStatus(status, 'SigCgt');
    const busy = caught | this.savedMask | sigmaskFromStatus(status, 'SigPnd') | sigmaskFromStatus(status, 'ShdPnd');
    const sig = BATCH_SIGNALS.find((s) => !((busy >> BigInt(s - 1)) & 1n));
    if (sig === undefined) return undefined;
    return { at: a.batchPage, room: PAGE_SIZE, sig, fallback: this.codeAddr + BigInt(SYSCALL_INSN_LEN) };
  }

  /** Test hook: a batch set up, not yet resumed ('batch-set'); running; stopped at its signal. */
  onBatch?: (phase: 'batch-set' | 'batch-running' | 'batch-stopped') => void;

  /**
   * Self-restoring mode: run `code` (from batchTarget's page, `calls` calls
   * ending in a tgkill of `sig` at `stopAt`, then a jump to the fallback)
   * until that signal stops the task; then one plain call, which leaves the
   * task in a syscall-exit stop on our block as after any call.
   */
  runToSignal(code: Buffer, t: { at: bigint; sig: number }, stopAt: bigint, calls: number): void {
    const a = this.area!;
    writeTask(a, t.at, code);
    const r = this.callRegs(SYS.getpid, []);
    ptrace.setRegs(this.pid, { ...r, rip: t.at });
    this.onOurCode = true;
    ptrace.setSigMask(this.pid, BigInt.asUintN(64, ALL_SIGNALS & ~(1n << BigInt(t.sig - 1))));
    this.calls += calls;
    remoteCalls.count += calls;
    remoteCalls.stops++;
    this.onBatch?.('batch-set');
    ptrace.cont(this.pid, 0);
    this.onBatch?.('batch-running');
    for (let i = 0; ; i++) {
      if (i >= MAX_STOPS_PER_CALL) throw new StasisError(ErrorCodes.PARASITE, `task ${this.pid}: too many stops during a batch of remote syscalls`);
      const ws = this.waitBounded(BATCH_TIMEOUT_MS);
      if (ws.kind === 'none') {
        // Our code ran past its signal (it should never): stop the task wherever it is, cure() does the rest.
        ptrace.interrupt(this.pid);
        throw new StasisError(ErrorCodes.PARASITE, `task ${this.pid}: a batch of remote syscalls did not stop within ${BATCH_TIMEOUT_MS} ms`);
      }
      // Ours, or the same ignored signal from elsewhere before it (dropped, as it would have been): go on.
      if (ws.kind === 'stopped' && ws.signal === t.sig && ptrace.peekReg(this.pid, 'rip') === stopAt) break;
      if (ws.kind === 'ptrace-event' || (ws.kind === 'stopped' && ws.signal === t.sig)) { ptrace.cont(this.pid, 0); continue; }
      if (ws.kind === 'stopped') throw new StasisError(ErrorCodes.PARASITE, `task ${this.pid} got signal ${ws.signal} during a batch of remote syscalls; restoring it`);
    }
    this.onBatch?.('batch-stopped');
    // Resumed with no signal from here on: the one that stopped it is dropped.
    ptrace.setSigMask(this.pid, ALL_SIGNALS);
    this.syscallRaw(SYS.getpid);
  }

  /** Run one system call; throw SyscallError on failure. */
  syscall(name: keyof typeof abi.SYS, ...args: (number | bigint)[]): bigint {
    return remoteResult(this.syscallRaw(abi.SYS[name], ...args), name, `in task ${this.pid}`);
  }

  /**
   * Map `len` bytes of scratch memory in the task (read-write, private). In
   * self-restoring mode the address is chosen first and recorded in every
   * block, so that a task left alone at any moment unmaps it by itself.
   */
  mapScratch(len: number): bigint {
    const a = this.area;
    if (!a) return this.syscall('mmap', 0, len, PROT.READ | PROT.WRITE, MAP.PRIVATE | MAP.ANONYMOUS, -1, 0);
    if (a.scratchLen) throw new StasisError(ErrorCodes.INTERNAL, `process ${a.tgid} already has a scratch mapping`);
    // One more page past `len`: code for batches, made executable (never writable: we write it through /proc/PID/mem).
    const whole = len + PAGE_SIZE;
    const at = quietGap(readMaps(this.pid), whole);
    if (at === null) throw new StasisError(ErrorCodes.PARASITE, `task ${this.pid} has no free address range for a scratch page`);
    this.recordScratch(at, whole);
    // Populated now, in the task's own mmap: our first process_vm_readv of a page the task had
    // not touched took 1.3-2 ms here (a small dump is frozen ~20 ms); populated, the first
    // batch's read-back is ~0.8 ms and the parasite step ~0.25 ms shorter (A/B, medians).
    const r = this.syscallRaw(SYS.mmap, at, whole, PROT.READ | PROT.WRITE, MAP.PRIVATE | MAP.ANONYMOUS | MAP.FIXED_NOREPLACE | MAP.POPULATE, -1, 0);
    if (r !== at) {
      this.recordScratch(0n, 0);
      if (r >= 0n) this.syscallRaw(SYS.munmap, r, whole);
      throw new SyscallError('remote mmap', r < 0n && r > -4096n ? Number(-r) : abi.ERRNO.EFAULT, `scratch at 0x${at.toString(16)} in task ${this.pid}`);
    }
    // A policy that forbids executable anonymous memory (SELinux execmem): no batches, calls one by one.
    const code = at + BigInt(len);
    a.batchPage = this.syscallRaw(SYS.mprotect, code, PAGE_SIZE, PROT.READ | PROT.EXEC) === 0n ? code : 0n;
    return at;
  }

  /** Unmap what mapScratch mapped. */
  unmapScratch(addr: bigint, len: number): void {
    const a = this.area;
    this.syscall('munmap', addr, a?.scratchLen || len);
    if (a) {
      this.recordScratch(0n, 0);
      a.batchPage = 0n;
    }
  }

  /** The scratch range in our area and in the data of every block in use. */
  private recordScratch(addr: bigint, len: number): void {
    const a = this.area!;
    a.scratch = addr;
    a.scratchLen = len;
    const words = SELF_RESTORE_DATA.encode({ scratch: addr, scratch_len: BigInt(len) }).subarray(SELF_RESTORE_DATA.offsets.scratch, SELF_RESTORE_DATA.offsets.scratch_len + 8);
    a.owner.forEach((o, i) => { if (o) writeTask(a, a.blocks[i] + BigInt(a.code.dataOffset + SELF_RESTORE_DATA.offsets.scratch), words); });
  }

  /** The task's next wait status: polled a while first (see SPIN_POLLS), then waited for. */
  private waitSpinning(block = true): WaitStatus {
    let ws = wait4(this.pid, abi.WAIT.WNOHANG);
    for (let spin = 0; ws.kind === 'none' && spin < SPIN_POLLS; spin++) ws = wait4(this.pid, abi.WAIT.WNOHANG);
    return ws.kind === 'none' && block ? wait4(this.pid) : ws;
  }

  /** Like waitSpinning, but gives up (kind 'none') after `ms`. */
  private waitBounded(ms: number): WaitStatus {
    let ws = this.waitSpinning(false);
    const end = Date.now() + ms;
    while (ws.kind === 'none' && Date.now() < end) {
      Atomics.wait(SLEEPER, 0, 0, 1);
      ws = wait4(this.pid, abi.WAIT.WNOHANG);
    }
    return ws;
  }

  private waitFor(ok: (ws: WaitStatus) => boolean, nr: number, syscallStop = false): void {
    for (let i = 0; i < MAX_STOPS_PER_CALL; i++) {
      const ws = this.waitSpinning();
      if (ok(ws)) return;
      if (ws.kind === 'exited' || ws.kind === 'signaled') {
        this.markDead();
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

  /** The task is gone: nothing left to cure in it (nor, if it was the last, in its process). */
  private markDead(): void {
    this.cured = true;
    try { this.releaseBlock(); } catch { /* the process is gone too */ }
  }

  private releaseBlock(): void {
    const a = this.area;
    if (!a || a.owner[this.block] !== this) return;
    a.owner[this.block] = null;
    if (a.owner.every((o) => o === null)) closeArea(a);
  }

  /** Put back code, registers and signal mask. Safe to call twice. */
  cure(): void {
    if (this.cured) return;
    const errors: unknown[] = [];
    const attempt = (f: () => void) => { try { f(); } catch (e) { errors.push(e); } };
    const a = this.area;
    // The last parasite of a process takes the scratch mapping with it.
    if (a?.scratchLen && a.owner.filter((o) => o).length === 1) attempt(() => this.unmapScratch(a.scratch, a.scratchLen));
    this.cured = true;
    if (this.mode === 'self-restoring') {
      attempt(() => this.cureSelfRestoring());
      attempt(() => this.releaseBlock());
    } else {
      if (this.codeWritten) attempt(() => ptrace.pokeData(this.pid, this.codeAddr, this.savedCode));
      attempt(() => ptrace.setRegs(this.pid, this.savedRegs));
      attempt(() => ptrace.setSigMask(this.pid, this.savedMask));
    }
    if (errors.length) throw errors[0];
  }

  /**
   * Back to the stop the task was frozen in, with its own registers and mask:
   * from a syscall-exit stop, through an interrupt stop (in the kernel's
   * signal code, as at freeze time) so that the kernel itself restarts the
   * syscall we interrupted. Every step leaves a task that resumes unharmed if
   * we vanish: the interrupt is queued before its registers change, so the
   * kernel runs its restart logic on them.
   */
  private cureSelfRestoring(): void {
    if (this.onOurCode) ptrace.interrupt(this.pid);
    ptrace.setSigMask(this.pid, this.savedMask);
    ptrace.setRegs(this.pid, this.savedRegs);
    if (!this.onOurCode) return;
    ptrace.cont(this.pid, 0);
    for (let i = 0; i < MAX_STOPS_PER_CALL; i++) {
      const ws = wait4(this.pid);
      if (ws.kind === 'ptrace-event' && ws.event === PTRACE_EVENT.STOP) { this.onOurCode = false; return; }
      if (ws.kind === 'exited' || ws.kind === 'signaled') throw new StasisError(ErrorCodes.TASK_DIED, `task ${this.pid} ${describeWait(ws)} while being restored`);
      // A signal reported first: it is the task's, deliver it as the kernel would have.
      if (ws.kind === 'stopped') ptrace.cont(this.pid, ws.signal);
    }
    throw new StasisError(ErrorCodes.PARASITE, `task ${this.pid}: did not stop again after its remote calls`);
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
