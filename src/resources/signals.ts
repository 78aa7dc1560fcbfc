// Signals: dispositions (through the parasite: rt_sigaction with a null new
// action), blocked masks (PTRACE_GETSIGMASK), pending signals with their
// siginfo (PTRACE_PEEKSIGINFO: process-wide and per thread, not dequeued) and
// the alternate signal stack (parasite: sigaltstack(NULL, &old)).
import { abi, ptrace, processVmReadv } from '../sys';
import type { Parasite } from '../compel/parasite';
import type { Entry } from '../images/image';

const { SIG, NSIG, KSIGACTION_SIZE, STACK_T_SIZE } = abi;

/** Signals whose disposition cannot be changed (and are not dumped, as in CRIU). */
export function hasDisposition(sig: number): boolean {
  return sig !== SIG.SIGKILL && sig !== SIG.SIGSTOP;
}

export function dumpSigactions(p: Parasite, scratch: bigint): Entry[] {
  const out: Entry[] = [];
  const buf = Buffer.alloc(KSIGACTION_SIZE);
  for (let sig = 1; sig <= NSIG; sig++) {
    if (!hasDisposition(sig)) continue;
    p.syscall('rt_sigaction', sig, 0, scratch, 8);
    processVmReadv(p.pid, scratch, buf);
    out.push({
      sigaction: buf.readBigUInt64LE(0), flags: buf.readBigUInt64LE(8),
      restorer: buf.readBigUInt64LE(16), mask: buf.readBigUInt64LE(24),
    });
  }
  return out;
}

export function dumpAltStack(p: Parasite, scratch: bigint): Entry {
  const buf = Buffer.alloc(STACK_T_SIZE);
  p.syscall('sigaltstack', 0, scratch);
  processVmReadv(p.pid, scratch, buf);
  return { ss_sp: buf.readBigUInt64LE(0), ss_flags: buf.readInt32LE(8) >>> 0, ss_size: buf.readBigUInt64LE(16) };
}

export function pendingSignals(tid: number, shared: boolean): Entry | undefined {
  const sigs = ptrace.peekSigInfo(tid, shared);
  return sigs.length ? { signals: sigs.map((siginfo) => ({ siginfo })) } : undefined;
}
