// ptrace(2) requests, named after the man page. Always the raw syscall: glibc's
// ptrace() wrapper returns PEEK results itself and ignores `data`.
import { addressOf } from './native';
import { sys, sysTry } from './call';
import {
  NT, PTRACE, USER_REGS_FIELDS, USER_REGS_SIZE, XSAVE, SIGINFO_SIZE, PEEKSIGINFO_ARGS, IOVEC, RSEQ_CONFIG,
  PTRACE_PEEKSIGINFO_SHARED, ERRNO, SECCOMP_METADATA_SIZE, type RegName,
} from './abi';
import { SyscallError } from '../errors';

export type Regs = Record<RegName, bigint>;

export function parseRegs(buf: Buffer): Regs {
  const r = {} as Regs;
  USER_REGS_FIELDS.forEach((name, i) => { r[name] = buf.readBigUInt64LE(i * 8); });
  return r;
}

export function encodeRegs(regs: Regs): Buffer {
  const buf = Buffer.alloc(USER_REGS_SIZE);
  USER_REGS_FIELDS.forEach((name, i) => { buf.writeBigUInt64LE(BigInt.asUintN(64, regs[name]), i * 8); });
  return buf;
}

function ptrace(req: number, pid: number, addr: number | bigint, data: number | bigint, what: string): number {
  return sys('ptrace', req, pid, addr, data, 0, 0, what);
}

export function seize(pid: number, options = 0): void {
  ptrace(PTRACE.SEIZE, pid, 0, options, `SEIZE ${pid}`);
}
export function interrupt(pid: number): void {
  ptrace(PTRACE.INTERRUPT, pid, 0, 0, `INTERRUPT ${pid}`);
}
export function cont(pid: number, sig = 0): void {
  ptrace(PTRACE.CONT, pid, 0, sig, `CONT ${pid}`);
}
/** PTRACE_SYSCALL: resume until the next syscall entry or exit. */
export function syscallStep(pid: number, sig = 0): void {
  ptrace(PTRACE.SYSCALL, pid, 0, sig, `SYSCALL ${pid}`);
}
export function detach(pid: number, sig = 0): void {
  ptrace(PTRACE.DETACH, pid, 0, sig, `DETACH ${pid}`);
}
/** Detach, returning -errno instead of throwing: used on cleanup paths. */
export function tryDetach(pid: number, sig = 0): number {
  return sysTry('ptrace', PTRACE.DETACH, pid, 0, sig);
}
export function listen(pid: number): void {
  ptrace(PTRACE.LISTEN, pid, 0, 0, `LISTEN ${pid}`);
}
export function setOptions(pid: number, options: number): void {
  ptrace(PTRACE.SETOPTIONS, pid, 0, options, `SETOPTIONS ${pid}`);
}
export function getEventMsg(pid: number): bigint {
  const buf = Buffer.alloc(8);
  ptrace(PTRACE.GETEVENTMSG, pid, 0, addressOf(buf), `GETEVENTMSG ${pid}`);
  return buf.readBigUInt64LE(0);
}

function getRegSet(pid: number, nt: number, size: number): Buffer {
  const buf = Buffer.alloc(size);
  const iov = IOVEC.encode({ base: addressOf(buf), len: size });
  ptrace(PTRACE.GETREGSET, pid, nt, addressOf(iov), `GETREGSET ${pid} nt=${nt}`);
  return buf.subarray(0, Number(IOVEC.decode(iov).len));
}

function setRegSet(pid: number, nt: number, data: Buffer): void {
  const iov = IOVEC.encode({ base: addressOf(data), len: data.length });
  ptrace(PTRACE.SETREGSET, pid, nt, addressOf(iov), `SETREGSET ${pid} nt=${nt}`);
}

export function getRegs(pid: number): Regs {
  return parseRegs(getRegSet(pid, NT.PRSTATUS, USER_REGS_SIZE));
}
export function setRegs(pid: number, regs: Regs): void {
  setRegSet(pid, NT.PRSTATUS, encodeRegs(regs));
}
/** setRegs from registers already encoded (encodeRegs): for calls made many times with a few words changed. */
export function setRegsEncoded(pid: number, regs: Buffer): void {
  setRegSet(pid, NT.PRSTATUS, regs);
}
/** One register, by name (PTRACE_PEEKUSER into struct user's regs). */
export function peekReg(pid: number, name: RegName): bigint {
  const buf = Buffer.alloc(8);
  ptrace(PTRACE.PEEKUSER, pid, USER_REGS_FIELDS.indexOf(name) * 8, addressOf(buf), `PEEKUSER ${pid}`);
  return buf.readBigUInt64LE(0);
}
/** The task's XSAVE area (standard format), as long as the kernel reports it. */
export function getXstate(pid: number): Buffer {
  return Buffer.from(getRegSet(pid, NT.X86_XSTATE, XSAVE.MAX_SIZE));
}
export function setXstate(pid: number, xsave: Buffer): void {
  setRegSet(pid, NT.X86_XSTATE, xsave);
}

export function getSigInfo(pid: number): Buffer {
  const buf = Buffer.alloc(SIGINFO_SIZE);
  ptrace(PTRACE.GETSIGINFO, pid, 0, addressOf(buf), `GETSIGINFO ${pid}`);
  return buf;
}

/**
 * Pending signals with their siginfo, without dequeuing them.
 * shared=true reads the process-wide queue, else the thread's own.
 */
export function peekSigInfo(pid: number, shared: boolean): Buffer[] {
  const out: Buffer[] = [];
  const batch = 32;
  const buf = Buffer.alloc(SIGINFO_SIZE * batch);
  for (let off = 0; ; ) {
    const args = PEEKSIGINFO_ARGS.encode({ off, flags: shared ? PTRACE_PEEKSIGINFO_SHARED : 0, nr: batch });
    const n = ptrace(PTRACE.PEEKSIGINFO, pid, addressOf(args), addressOf(buf), `PEEKSIGINFO ${pid}`);
    for (let i = 0; i < n; i++) out.push(Buffer.from(buf.subarray(i * SIGINFO_SIZE, (i + 1) * SIGINFO_SIZE)));
    if (n < batch) return out;
    off += n;
  }
}

export function getSigMask(pid: number): bigint {
  const buf = Buffer.alloc(8);
  ptrace(PTRACE.GETSIGMASK, pid, 8, addressOf(buf), `GETSIGMASK ${pid}`);
  return buf.readBigUInt64LE(0);
}
export function setSigMask(pid: number, mask: bigint): void {
  const buf = Buffer.alloc(8);
  buf.writeBigUInt64LE(BigInt.asUintN(64, mask), 0);
  ptrace(PTRACE.SETSIGMASK, pid, 8, addressOf(buf), `SETSIGMASK ${pid}`);
}

export interface RseqConfig { abiPointer: bigint; abiSize: number; signature: number; flags: number }
export function getRseqConfiguration(pid: number): RseqConfig {
  const buf = Buffer.alloc(RSEQ_CONFIG.size);
  ptrace(PTRACE.GET_RSEQ_CONFIGURATION, pid, RSEQ_CONFIG.size, addressOf(buf), `GET_RSEQ_CONFIGURATION ${pid}`);
  const c = RSEQ_CONFIG.decode(buf);
  return { abiPointer: c.rseq_abi_pointer, abiSize: c.rseq_abi_size, signature: c.signature, flags: c.flags };
}

/**
 * The task's n-th classic-BPF seccomp filter (struct sock_filter[]), or null
 * when there is none at that index.
 */
export function seccompGetFilter(pid: number, index: number): Buffer | null {
  const n = sysTry('ptrace', PTRACE.SECCOMP_GET_FILTER, pid, index, 0);
  if (n === -ERRNO.ENOENT) return null;
  if (n < 0) throw new SyscallError('ptrace', -n, `SECCOMP_GET_FILTER ${pid}`);
  const buf = Buffer.alloc(n * 8);
  ptrace(PTRACE.SECCOMP_GET_FILTER, pid, index, addressOf(buf), `SECCOMP_GET_FILTER ${pid}`);
  return buf;
}

/** Flags (SECCOMP_FILTER_FLAG_LOG...) the n-th filter was installed with. */
export function seccompGetMetadata(pid: number, index: number): bigint {
  const buf = Buffer.alloc(SECCOMP_METADATA_SIZE);
  buf.writeBigUInt64LE(BigInt(index), 0);
  ptrace(PTRACE.SECCOMP_GET_METADATA, pid, SECCOMP_METADATA_SIZE, addressOf(buf), `SECCOMP_GET_METADATA ${pid}`);
  return buf.readBigUInt64LE(8);
}

export function peekData(pid: number, addr: bigint): bigint {
  const buf = Buffer.alloc(8);
  ptrace(PTRACE.PEEKDATA, pid, addr, addressOf(buf), `PEEKDATA ${pid}`);
  return buf.readBigUInt64LE(0);
}
export function pokeData(pid: number, addr: bigint, word: bigint): void {
  ptrace(PTRACE.POKEDATA, pid, addr, BigInt.asIntN(64, word), `POKEDATA ${pid}`);
}
