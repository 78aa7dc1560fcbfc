// The native boundary: the only module that imports koffi. Everything that
// crosses into C goes through the two functions below.
//
// Only synchronous koffi calls are used: ptrace requests must come from the
// thread that attached, and koffi's .async runs on a worker thread.
import type * as Koffi from 'koffi';

/**
 * koffi's native module itself: its index.js also loads https, crypto and
 * zlib (for its installer) and wraps deprecated names, ~15 ms of start-up we
 * do not need. Any other layout (another platform's build): the package.
 */
function loadKoffi(): typeof Koffi {
  try {
    const native = require(`koffi/build/koffi/${process.platform}_${process.arch}/koffi.node`) as typeof Koffi & { version?: string };
    const pkg = require('koffi/package.json') as { version: string };
    if (native.version === pkg.version) return native;
  } catch { /* the package's own loader below */ }
  return require('koffi') as typeof Koffi;
}

const koffi = loadKoffi();

const libc = koffi.load('libc.so.6');

// syscall(2) is variadic; a fixed 7-argument prototype is sound on x86-64
// (arguments travel in registers, unused ones are ignored by the kernel).
const rawSyscall = libc.func(
  'long syscall(long nr, intptr_t a, intptr_t b, intptr_t c, intptr_t d, intptr_t e, intptr_t f)',
);

export type Arg = number | bigint;

/**
 * Buffers whose address was taken since the last system call. A Buffer that
 * the caller no longer references may be collected (and its memory reused)
 * between addressOf() and the call that passes the address to the kernel:
 * keep every one alive until the next call has returned.
 */
let pinned: (Buffer | Uint8Array)[] = [];

/** Raw system call. Returns the kernel's result, or -errno on failure. */
export function syscall(nr: number, a: Arg = 0, b: Arg = 0, c: Arg = 0, d: Arg = 0, e: Arg = 0, f: Arg = 0): number {
  const r = rawSyscall(nr, a, b, c, d, e, f) as number | bigint;
  pinned = [];
  const v = typeof r === 'bigint' ? Number(r) : r;
  if (v === -1) return -(koffi.errno() as number);
  return v;
}

/** Same as syscall() but keeps the full 64-bit result (for addresses above 2^53). */
export function syscallBig(nr: number, a: Arg = 0, b: Arg = 0, c: Arg = 0, d: Arg = 0, e: Arg = 0, f: Arg = 0): bigint {
  const r = rawSyscall(nr, a, b, c, d, e, f) as number | bigint;
  pinned = [];
  const v = BigInt(r);
  if (v === -1n) return -BigInt(koffi.errno() as number);
  return v;
}

/** Address of a Buffer's first byte (byteOffset included). */
export function addressOf(buf: Buffer | Uint8Array): bigint {
  pinned.push(buf);
  return koffi.address(buf) as bigint;
}
