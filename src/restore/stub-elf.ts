// The restore stub's program: a static x86-64 ELF of a few hundred bytes,
// built here, run from a memfd. Nothing a restored process could map (unlike
// /bin/sleep, which made the kernel refuse to switch a restored `sleep`'s exe
// link: EBUSY), no libc (no rseq to unregister, few mappings to remove).
//
// What it does until we seize it: close fd 3 (the memfd it was run from),
// make sure its parent is stasis (posix_spawn makes it so at once; a starter
// in between would have to exit for it to be re-parented), set PR_SET_PDEATHSIG
// to SIGKILL and check its parent once more, then pause() forever. If stasis
// is gone at any point (its pid no longer there, or not re-parented to it
// within 10 s) it exits: a stub never outlives the restore that started it. It also holds `syscall; int3` for the first remote call.
import { abi } from '../sys';

const { SYS, PR, SIG, ELF_MAGIC, ELFCLASS64, ELFDATA2LSB, EV_CURRENT, ELFOSABI_SYSV, ET, EM_X86_64, PT, PF, ELF64_EHDR, ELF64_PHDR, PAGE_SIZE, SYSCALL_INT3 } = abi;

/** Where the stub's single PT_LOAD goes (ET_EXEC: fixed). */
export const STUB_BASE = 0x400000n;
/** The fd the starter hands the memfd on as. */
export const STUB_FD = 3;
const POLL_NS = 1_000_000;
/** Polls (of POLL_NS) for the re-parenting to stasis before giving up. */
const MAX_POLLS = 10_000;

type Label = 'loop' | 'ok' | 'park' | 'die' | 'tramp' | 'ts';

/** A tiny assembler: instructions as bytes, rel8 jumps and rip-relative disp32 to labels. */
class Code {
  private bytes: number[] = [];
  private labels = new Map<Label, number>();
  private fixups: { at: number; label: Label; size: 1 | 4 }[] = [];
  label(l: Label): this { this.labels.set(l, this.bytes.length); return this; }
  raw(...b: number[]): this { this.bytes.push(...b); return this; }
  imm32(v: number): this { const b = Buffer.alloc(4); b.writeInt32LE(v); return this.raw(...b); }
  /** mov $imm32, %eax (%edi, %esi) */
  movEax(v: number): this { return this.raw(0xb8).imm32(v); }
  movEdi(v: number): this { return this.raw(0xbf).imm32(v); }
  movEsi(v: number): this { return this.raw(0xbe).imm32(v); }
  syscall(): this { return this.raw(0x0f, 0x05); }
  sys(nr: number): this { return this.movEax(nr).syscall(); }
  /** cmp $imm32, %eax */
  cmpEax(v: number): this { return this.raw(0x3d).imm32(v); }
  private jump(op: number, l: Label): this {
    this.raw(op);
    this.fixups.push({ at: this.bytes.length, label: l, size: 1 });
    return this.raw(0);
  }
  je(l: Label): this { return this.jump(0x74, l); }
  jne(l: Label): this { return this.jump(0x75, l); }
  jmp(l: Label): this { return this.jump(0xeb, l); }
  /** lea l(%rip), %rdi */
  leaRdi(l: Label): this {
    this.raw(0x48, 0x8d, 0x3d);
    this.fixups.push({ at: this.bytes.length, label: l, size: 4 });
    return this.imm32(0);
  }
  align(n: number): this { while (this.bytes.length % n) this.raw(0); return this; }
  offsetOf(l: Label): number { return this.labels.get(l)!; }
  link(): Buffer {
    const b = Buffer.from(this.bytes);
    for (const f of this.fixups) {
      const rel = this.offsetOf(f.label) - (f.at + f.size);
      if (f.size === 1) {
        if (rel < -128 || rel > 127) throw new Error(`stub: jump to ${f.label} out of rel8 range`);
        b.writeInt8(rel, f.at);
      } else b.writeInt32LE(rel, f.at);
    }
    return b;
  }
}

function program(parentPid: number): Code {
  const c = new Code();
  c.movEdi(STUB_FD).sys(SYS.close);
  c.raw(0x41, 0xbc).imm32(MAX_POLLS); // mov $n, %r12d (syscalls keep r12)
  c.label('loop').sys(SYS.getppid)
    .cmpEax(parentPid).je('ok')
    .movEdi(parentPid).raw(0x31, 0xf6).sys(SYS.kill) // kill(stasis, 0): is it still there?
    .raw(0x85, 0xc0).jne('die') // test %eax, %eax
    .movEax(SYS.nanosleep).leaRdi('ts').raw(0x31, 0xf6).syscall() // xor %esi, %esi
    .raw(0x41, 0xff, 0xcc).je('die') // dec %r12d: waited long enough
    .jmp('loop');
  c.label('ok').movEdi(PR.SET_PDEATHSIG).movEsi(SIG.SIGKILL).sys(SYS.prctl);
  c.sys(SYS.getppid).cmpEax(parentPid).jne('die');
  c.label('park').sys(SYS.pause).jmp('park');
  c.label('die').movEdi(1).sys(SYS.exit_group);
  c.label('tramp').raw(...SYSCALL_INT3);
  c.align(8).label('ts').raw(...Buffer.alloc(8)).imm32(POLL_NS).imm32(0); // struct timespec { 0, 1 ms }
  return c;
}

export interface StubImage {
  image: Buffer;
  /** Address of `syscall; int3` once loaded. */
  trampoline: bigint;
  entry: bigint;
}

/** The stub's ELF file for a stasis whose pid is `parentPid`. */
export function stubElf(parentPid: number): StubImage {
  const code = program(parentPid);
  const text = code.link();
  const phnum = 2;
  const headers = ELF64_EHDR.size + phnum * ELF64_PHDR.size;
  const total = headers + text.length;
  const ident = Buffer.alloc(16);
  ELF_MAGIC.copy(ident);
  ident.set([ELFCLASS64, ELFDATA2LSB, EV_CURRENT, ELFOSABI_SYSV], ELF_MAGIC.length);
  const entry = STUB_BASE + BigInt(headers);
  const ehdr = ELF64_EHDR.encode({
    ident, type: ET.EXEC, machine: EM_X86_64, version: EV_CURRENT, entry, phoff: BigInt(ELF64_EHDR.size), shoff: 0n,
    flags: 0, ehsize: ELF64_EHDR.size, phentsize: ELF64_PHDR.size, phnum, shentsize: 0, shnum: 0, shstrndx: 0,
  });
  const load = ELF64_PHDR.encode({
    type: PT.LOAD, flags: PF.R | PF.X, offset: 0n, vaddr: STUB_BASE, paddr: STUB_BASE, filesz: BigInt(total), memsz: BigInt(total), align: BigInt(PAGE_SIZE),
  });
  // No executable stack (and no READ_IMPLIES_EXEC personality, which a
  // restored task cloned from the stub would inherit).
  const stack = ELF64_PHDR.encode({ type: PT.GNU_STACK, flags: PF.R | PF.W, align: 16n });
  return { image: Buffer.concat([ehdr, load, stack, text]), trampoline: entry + BigInt(code.offsetOf('tramp')), entry };
}
