// Machine code for several remote syscalls run in one go: each call loads
// its registers, runs `syscall` and stores rax in a results array; an int3
// at the end stops the task for us. One stop instead of one per call, for
// tasks on our restore trampoline (int3 mode: they die with us).
import { abi } from '../sys';

const { SYSCALL_INSN } = abi;

/** x86-64 register numbers of the syscall registers (rax, then the arguments in order). */
const REGS = [0, 7, 6, 2, 10, 8, 9] as const; // rax, rdi, rsi, rdx, r10, r8, r9
const INT3 = 0xcc;
/** movabs %rax, moffs64 (REX.W A3). */
const STORE_RAX = [0x48, 0xa3];

export interface BatchCall { nr: number; args: bigint[] }

/** mov $v, %reg: the 32-bit form (zero-extends) when v fits, else movabs. */
function movImm(reg: number, v: bigint): Buffer {
  if (v <= 0xffffffffn) {
    const b = Buffer.alloc(reg >= 8 ? 6 : 5);
    if (reg >= 8) b[0] = 0x41;
    b[b.length - 5] = 0xb8 + (reg & 7);
    b.writeUInt32LE(Number(v), b.length - 4);
    return b;
  }
  const b = Buffer.alloc(10);
  b[0] = 0x48 | (reg >= 8 ? 1 : 0);
  b[1] = 0xb8 + (reg & 7);
  b.writeBigUInt64LE(v, 2);
  return b;
}

/** One call: its registers, `syscall`, rax stored at `result`. */
export function callCode(c: BatchCall, result: bigint): Buffer {
  const vals = [BigInt(c.nr), ...Array.from({ length: 6 }, (_, i) => BigInt.asUintN(64, c.args[i] ?? 0n))];
  const store = Buffer.alloc(10);
  Buffer.from(STORE_RAX).copy(store);
  store.writeBigUInt64LE(result, 2);
  return Buffer.concat([...REGS.map((r, i) => movImm(r, vals[i])), SYSCALL_INSN, store]);
}

/** The calls in order, results at `results` (8 bytes each), then int3. */
export function batchCode(calls: BatchCall[], results: bigint): Buffer {
  return Buffer.concat([...calls.map((c, i) => callCode(c, results + BigInt(8 * i))), Buffer.from([INT3])]);
}
