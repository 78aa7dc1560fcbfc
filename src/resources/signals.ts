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

// ---------------------------------------------------------------- restore

import type { RestoreCtx, TaskRestore } from '../restore/context';
import type { Decoded } from '../images/image';
import type { RemoteTask } from '../restore/remote';

const SIG_IGN = 1n;

/** Each int3 of a remote call would reset an ignored SIGTRAP to SIG_DFL: that
 *  one is set at the very end, without int3 (see restoreLateSigaction). */
export function isLateSigaction(sig: number, sa: Decoded): boolean {
  return sig === SIG.SIGTRAP && BigInt(sa.sigaction) === SIG_IGN;
}

function setSigaction(t: RemoteTask, sig: number, sa: Decoded): void {
  const b = Buffer.alloc(KSIGACTION_SIZE);
  b.writeBigUInt64LE(BigInt(sa.sigaction), 0);
  b.writeBigUInt64LE(BigInt(sa.flags), 8);
  b.writeBigUInt64LE(BigInt(sa.restorer), 16);
  b.writeBigUInt64LE(BigInt(sa.mask), 24);
  t.call('rt_sigaction', sig, t.put(b, 512), 0, 8);
}

function sigactionsBySignal(tr: TaskRestore): [number, Decoded][] {
  const sas: Decoded[] = tr.img.threads[0].core.tc.sigactions ?? [];
  const out: [number, Decoded][] = [];
  let i = 0;
  for (let sig = 1; sig <= NSIG && i < sas.length; sig++) if (hasDisposition(sig)) out.push([sig, sas[i++]]);
  return out;
}

export function restoreSigactions(_ctx: RestoreCtx, tr: TaskRestore): void {
  for (const [sig, sa] of sigactionsBySignal(tr)) if (!isLateSigaction(sig, sa)) setSigaction(tr.task, sig, sa);
}

export function restoreLateSigaction(tr: TaskRestore, t: RemoteTask): void {
  for (const [sig, sa] of sigactionsBySignal(tr)) if (isLateSigaction(sig, sa)) setSigaction(t, sig, sa);
}

export function restoreAltStack(t: RemoteTask, sas: Decoded | undefined): void {
  if (!sas) return;
  const b = Buffer.alloc(STACK_T_SIZE);
  b.writeBigUInt64LE(BigInt(sas.ss_sp), 0);
  b.writeInt32LE(sas.ss_flags & 2 /* SS_DISABLE */, 8);
  b.writeBigUInt64LE(BigInt(sas.ss_size), 16);
  t.call('sigaltstack', t.put(b, 512), 0);
}

/**
 * Queue pending signals again, with their siginfo. The task sends them to
 * itself (a siginfo with si_code >= 0 may only be queued by the target).
 * Called while every signal is blocked in the task.
 */
export function restorePending(t: RemoteTask, tgid: number, tid: number, queue: Decoded | undefined, shared: boolean): void {
  for (const s of (queue?.signals ?? []) as Decoded[]) {
    const info = Buffer.from(s.siginfo as Buffer);
    const signo = info.readInt32LE(0);
    const at = t.put(info, 2048);
    if (shared) t.call('rt_sigqueueinfo', tgid, signo, at);
    else t.call('rt_tgsigqueueinfo', tgid, tid, signo, at);
  }
}
