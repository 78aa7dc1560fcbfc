// The self-restoring code of the dump-time parasite: a few instructions placed
// in unused bytes of the task's [vdso] so that a task whose tracer vanished at
// any moment of a remote call puts itself back exactly as it was.
//
// A remote call runs the block's first instruction, `syscall`, and the tracer
// stops the task at that syscall's exit (PTRACE_SYSCALL) before anything after
// it runs. A tracer that exits no longer stops it (the kernel clears syscall
// tracing when it unlinks a tracee), so the task goes on into the fallback:
//
//   block every signal         (whatever mask the task holds now)
//   munmap(scratch, len)       (our scratch mapping, if any: len 0 is EINVAL, a no-op)
//   rflags  <- data            (popfq, rsp pointing into the data: signals are blocked)
//   rsp     <- data            (its own stack again, before signals can be delivered)
//   rt_sigprocmask(its own mask)  (flags survive a syscall: the kernel returns with them)
//   every other register <- data
//   jmp *rip
//
// No rt_sigreturn: it would reset the task's restart_block, turning an
// interrupted nanosleep into EINTR, and need an FPU image (our code touches
// neither the FPU nor the task's memory). The data holds the registers as the
// kernel would have left them on return to user space: a syscall interrupted
// by our freeze is restarted (see liveRestart).
import { abi, type Regs } from '../sys';

const { ERESTART, SYS, SYSCALL_INSN_LEN, PAGE_SIZE, SIG_HOW, ELF_MAGIC, ELF64_EHDR, ELF64_PHDR, ELF64_SHDR, SHT_NOBITS } = abi;

/** The data of one block: one word each, after the code. */
export const SELF_RESTORE_DATA = abi.struct({
  all_mask: 'u64', scratch: 'u64', scratch_len: 'u64', mask: 'u64', eflags: 'u64', rsp: 'u64', rip: 'u64',
  rax: 'u64', rbx: 'u64', rcx: 'u64', rdx: 'u64', rsi: 'u64', rdi: 'u64', rbp: 'u64',
  r8: 'u64', r9: 'u64', r10: 'u64', r11: 'u64', r12: 'u64', r13: 'u64', r14: 'u64', r15: 'u64',
});
type DataField = keyof typeof SELF_RESTORE_DATA.offsets;

/** Registers the fallback reloads with mov (rsp and rflags go first, separately). */
const GPRS = ['rax', 'rbx', 'rcx', 'rdx', 'rsi', 'rdi', 'rbp', 'r8', 'r9', 'r10', 'r11', 'r12', 'r13', 'r14', 'r15'] as const;
/** x86-64 register numbers (ModRM reg field, plus REX.R for 8-15). */
const REGNUM: Record<(typeof GPRS)[number] | 'rsp', number> = {
  rax: 0, rcx: 1, rdx: 2, rbx: 3, rsp: 4, rbp: 5, rsi: 6, rdi: 7, r8: 8, r9: 9, r10: 10, r11: 11, r12: 12, r13: 13, r14: 14, r15: 15,
};

/** The kernel's sigset_t: one 64-bit word on x86-64. */
const SIGSET_SIZE = 8;

/** Machine code with RIP-relative references to data fields, resolved once the code's length is known. */
class Asm {
  private parts: (Buffer | { head: Buffer; field: DataField })[] = [];
  private len = 0;
  raw(...bytes: number[]): this { return this.push(Buffer.from(bytes)); }
  private push(b: Buffer): this { this.parts.push(b); this.len += b.length; return this; }
  /** An instruction ending in a disp32 relative to its end, pointing at `field`. */
  private rel(head: number[], field: DataField): this {
    this.parts.push({ head: Buffer.from(head), field });
    this.len += head.length + 4;
    return this;
  }
  imm32(b: Buffer | number[], v: number): this {
    const i = Buffer.alloc(4);
    i.writeInt32LE(v);
    return this.push(Buffer.concat([Buffer.from(b), i]));
  }
  syscall(): this { return this.raw(0x0f, 0x05); }
  popfq(): this { return this.raw(0x9d); }
  /** mov field(%rip), %reg (REX.W 8B /r, mod 00 r/m 101). */
  load(reg: keyof typeof REGNUM, field: DataField): this {
    const n = REGNUM[reg];
    return this.rel([0x48 | (n >= 8 ? 4 : 0), 0x8b, ((n & 7) << 3) | 5], field);
  }
  /** lea field(%rip), %reg */
  lea(reg: keyof typeof REGNUM, field: DataField): this {
    const n = REGNUM[reg];
    return this.rel([0x48 | (n >= 8 ? 4 : 0), 0x8d, ((n & 7) << 3) | 5], field);
  }
  /** jmp *field(%rip) */
  jmpIndirect(field: DataField): this { return this.rel([0xff, 0x25], field); }
  /** Code, then the data area at an 8-aligned offset. */
  link(): { code: Buffer; dataOffset: number } {
    const dataOffset = (this.len + 7) & ~7;
    const out: Buffer[] = [];
    let at = 0;
    for (const p of this.parts) {
      if (Buffer.isBuffer(p)) { out.push(p); at += p.length; continue; }
      const end = at + p.head.length + 4;
      const d = Buffer.alloc(4);
      d.writeInt32LE(dataOffset + SELF_RESTORE_DATA.offsets[p.field] - end);
      out.push(p.head, d);
      at = end;
    }
    return { code: Buffer.concat(out), dataOffset };
  }
}

/** rt_sigprocmask(SIG_SETMASK, &field, NULL, 8) */
function setMask(a: Asm, field: DataField): void {
  a.imm32([0xb8], SYS.rt_sigprocmask) // mov $nr, %eax
    .imm32([0xbf], SIG_HOW.SETMASK) // mov $how, %edi
    .lea('rsi', field)
    .imm32([0xba], 0) // mov $0, %edx (mov: xor would change the flags)
    .imm32([0x41, 0xba], SIGSET_SIZE) // mov $8, %r10d
    .syscall();
}

export interface SelfRestoreCode {
  /** Code then data, position independent. */
  bytes: Buffer;
  /** Where the data area starts within `bytes`. */
  dataOffset: number;
  /** The whole block's size, rounded to 64 bytes. */
  size: number;
}

/** The block: entry `syscall` at offset 0, then the fallback, then room for the data. */
export function selfRestoreCode(): SelfRestoreCode {
  const a = new Asm();
  a.syscall();
  setMask(a, 'all_mask');
  a.load('rdi', 'scratch').load('rsi', 'scratch_len').imm32([0xb8], SYS.munmap).syscall();
  a.lea('rsp', 'eflags').popfq();
  a.load('rsp', 'rsp');
  setMask(a, 'mask');
  for (const r of GPRS) a.load(r, r);
  a.jmpIndirect('rip');
  const { code, dataOffset } = a.link();
  const size = (dataOffset + SELF_RESTORE_DATA.size + 63) & ~63;
  const bytes = Buffer.alloc(dataOffset + SELF_RESTORE_DATA.size);
  code.copy(bytes);
  return { bytes, dataOffset, size };
}

/**
 * The registers as the kernel leaves them on return to user space when no
 * signal handler runs: a syscall that our freeze interrupted is re-executed
 * (ERESTARTSYS/NOINTR/NOHAND: same call; ERESTART_RESTARTBLOCK: restart_syscall,
 * which carries on with the kernel's saved restart_block, e.g. what is left of
 * a nanosleep). orig_rax = -1: nothing left to restart.
 */
export function liveRestart(r: Regs): Regs {
  const out = { ...r, orig_rax: 0xffffffffffffffffn };
  if (BigInt.asIntN(64, r.orig_rax) < 0n) return out;
  const err = -BigInt.asIntN(64, r.rax);
  if (err === BigInt(ERESTART.SYS) || err === BigInt(ERESTART.NOINTR) || err === BigInt(ERESTART.NOHAND)) {
    out.rax = r.orig_rax;
    out.rip = r.rip - BigInt(SYSCALL_INSN_LEN);
  } else if (err === BigInt(ERESTART.RESTARTBLOCK)) {
    out.rax = BigInt(SYS.restart_syscall);
    out.rip = r.rip - BigInt(SYSCALL_INSN_LEN);
  }
  return out;
}

/** The data words for one thread: its registers (after liveRestart), mask and our scratch. */
export function selfRestoreData(regs: Regs, mask: bigint, scratch: bigint, scratchLen: number): Buffer {
  const r = liveRestart(regs);
  return SELF_RESTORE_DATA.encode({
    all_mask: abi.ALL_SIGNALS, scratch, scratch_len: BigInt(scratchLen), mask, eflags: r.eflags, rsp: r.rsp, rip: r.rip,
    rax: r.rax, rbx: r.rbx, rcx: r.rcx, rdx: r.rdx, rsi: r.rsi, rdi: r.rdi, rbp: r.rbp,
    r8: r.r8, r9: r.r9, r10: r.r10, r11: r.r11, r12: r.r12, r13: r.r13, r14: r.r14, r15: r.r15,
  });
}

/**
 * The unused tail of a vdso image (its bytes as mapped): from past everything
 * its headers describe (segments, sections, header tables) to the end, 64-byte
 * aligned. null when it is not an ELF image we understand.
 */
export function vdsoPadding(img: Buffer): { offset: number; len: number } | null {
  if (img.length < ELF64_EHDR.size || !img.subarray(0, ELF_MAGIC.length).equals(ELF_MAGIC)) return null;
  const eh = ELF64_EHDR.decode(img);
  let end = ELF64_EHDR.size;
  const extent = (off: bigint, len: bigint) => { const e = Number(off + len); if (e > end) end = e; };
  extent(eh.phoff, BigInt(eh.phnum * eh.phentsize));
  extent(eh.shoff, BigInt(eh.shnum * eh.shentsize));
  if (end > img.length) return null;
  for (let i = 0; i < eh.phnum; i++) {
    const ph = ELF64_PHDR.decode(img.subarray(Number(eh.phoff) + i * eh.phentsize));
    extent(ph.offset, ph.filesz);
  }
  for (let i = 0; i < eh.shnum; i++) {
    const sh = ELF64_SHDR.decode(img.subarray(Number(eh.shoff) + i * eh.shentsize));
    if (sh.type !== SHT_NOBITS) extent(sh.offset, sh.size);
  }
  const start = (end + 63) & ~63;
  if (start >= img.length) return null;
  return { offset: start, len: img.length - start };
}

/** A free address for a scratch mapping: the middle of the largest gap, far from where brk or mmap grow. */
export function quietGap(maps: { start: bigint; end: bigint }[], len: number): bigint | null {
  const LOW = 0x1_0000_0000n, HIGH = 0x7fff_0000_0000n;
  const busy = maps.filter((m) => m.end > LOW && m.start < HIGH).sort((a, b) => (a.start < b.start ? -1 : 1));
  let best: { lo: bigint; hi: bigint } | null = null;
  let lo = LOW;
  for (const m of [...busy, { start: HIGH, end: HIGH }]) {
    if (m.start > lo && (!best || m.start - lo > best.hi - best.lo)) best = { lo, hi: m.start };
    if (m.end > lo) lo = m.end;
  }
  const page = BigInt(PAGE_SIZE);
  if (!best || best.hi - best.lo < BigInt(len) + 2n * page) return null;
  return ((best.lo + (best.hi - best.lo) / 2n) / page) * page;
}
