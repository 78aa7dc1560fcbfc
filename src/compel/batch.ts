// Machine code for several remote syscalls run in one go: each call loads
// its registers, runs `syscall` and stores rax in a results array; then a
// tail stops the task for us. One stop instead of two (or one) per call.
// On the restore trampoline (tasks that die with us) the tail is an int3;
// in a live task (self-restoring parasite) it raises a signal the task
// ignores and jumps into the fallback that restores the task: if we are gone
// by then, the kernel drops the signal and the task puts itself back.
import { abi } from '../sys';

const { SYSCALL_INSN } = abi;

/** x86-64 register numbers of the syscall registers (rax, then the arguments in order). */
const REGS = [0, 7, 6, 2, 10, 8, 9] as const; // rax, rdi, rsi, rdx, r10, r8, r9
const INT3 = 0xcc;
/** movabs %rax, moffs64 (REX.W A3). */
const STORE_RAX = [0x48, 0xa3];

export interface BatchCall { nr: number; args: bigint[] }

/** Length of mov $v, %reg: the 32-bit form (zero-extends) when v fits, else movabs. */
function movLen(reg: number, v: bigint): number {
  return v <= 0xffffffffn ? (reg >= 8 ? 6 : 5) : 10;
}

/** Write mov $v, %reg at `at`; returns the offset past it. */
function movImm(out: Buffer, at: number, reg: number, v: bigint): number {
  if (v <= 0xffffffffn) {
    if (reg >= 8) out[at++] = 0x41;
    out[at++] = 0xb8 + (reg & 7);
    out.writeUInt32LE(Number(v), at);
    return at + 4;
  }
  out[at++] = 0x48 | (reg >= 8 ? 1 : 0);
  out[at++] = 0xb8 + (reg & 7);
  out.writeBigUInt64LE(v, at);
  return at + 8;
}

/** A call's register values: rax = nr, then the arguments (missing ones 0). */
function values(c: BatchCall): bigint[] {
  return [BigInt(c.nr), ...Array.from({ length: 6 }, (_, i) => BigInt.asUintN(64, c.args[i] ?? 0n))];
}

const STORE_LEN = 10;

/** Bytes of one call's code (its registers, `syscall`, the store of rax). */
export function callCodeLength(c: BatchCall): number {
  const v = values(c);
  return REGS.reduce<number>((n, r, i) => n + movLen(r, v[i]), 0) + SYSCALL_INSN.length + STORE_LEN;
}

/** Write one call at `at`: its registers, `syscall`, rax stored at `result`. Returns the offset past it. */
function writeCall(out: Buffer, at: number, c: BatchCall, result: bigint): number {
  const v = values(c);
  REGS.forEach((r, i) => { at = movImm(out, at, r, v[i]); });
  at += SYSCALL_INSN.copy(out, at);
  out[at] = STORE_RAX[0];
  out[at + 1] = STORE_RAX[1];
  out.writeBigUInt64LE(result, at + 2);
  return at + STORE_LEN;
}

/** The calls in order, results at `results` (8 bytes each), then `tail`. */
export function batchCode(calls: BatchCall[], results: bigint, tail: Buffer): Buffer {
  const out = Buffer.alloc(calls.reduce((n, c) => n + callCodeLength(c), 0) + tail.length);
  let at = 0;
  calls.forEach((c, i) => { at = writeCall(out, at, c, results + BigInt(8 * i)); });
  tail.copy(out, at);
  return out;
}

export const INT3_TAIL = Buffer.from([INT3]);

/**
 * tgkill(getpid(), gettid(), sig), then jmp *fallback; `stopOffset`: just
 * past tgkill's `syscall` (where the task stops with the signal). The ids are
 * the task's own: in a pid namespace of its own, ours would name others.
 */
export function signalTail(sig: number, fallback: bigint): { code: Buffer; stopOffset: number } {
  const code = Buffer.alloc(64);
  let at = 0;
  const raw = (...bytes: number[]) => { for (const x of bytes) code[at++] = x; };
  at = movImm(code, at, REGS[0], BigInt(abi.SYS.getpid));
  at += SYSCALL_INSN.copy(code, at);
  raw(0x48, 0x89, 0xc7); // mov %rax, %rdi
  at = movImm(code, at, REGS[0], BigInt(abi.SYS.gettid));
  at += SYSCALL_INSN.copy(code, at); // (a syscall changes only rax, rcx and r11)
  raw(0x48, 0x89, 0xc6); // mov %rax, %rsi
  at = movImm(code, at, REGS[3], BigInt(sig));
  at = movImm(code, at, REGS[0], BigInt(abi.SYS.tgkill));
  at += SYSCALL_INSN.copy(code, at);
  const stopOffset = at;
  raw(0xff, 0x25, 0, 0, 0, 0); // jmp *0(%rip): the address follows
  code.writeBigUInt64LE(fallback, at);
  return { code: code.subarray(0, at + 8), stopOffset };
}
