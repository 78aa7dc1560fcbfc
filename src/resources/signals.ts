// Signals: dispositions (through the parasite: rt_sigaction with a null new
// action), blocked masks (PTRACE_GETSIGMASK, in core), pending signals with
// their siginfo (PTRACE_PEEKSIGINFO: process-wide and per thread, not
// dequeued) and the alternate signal stack (parasite: sigaltstack(NULL, &old)).
import { abi, ptrace } from '../sys';
import { inBuf, outBuf, type RemoteTask } from '../compel/remote';
import type { Msg } from '../images/schema';
import { defineUnit, type ParasiteCalls, type RemoteCall } from '../unit/unit';
import type { TaskRestore } from '../unit/restore-ctx';
import { remoteResult } from '../errors';

const { SIG, NSIG, KSIGACTION, STACK_T, SS_DISABLE, SIG_IGN } = abi;

/** Signals whose disposition cannot be changed (and are not dumped, as in CRIU). */
export function hasDisposition(sig: number): boolean {
  return sig !== SIG.SIGKILL && sig !== SIG.SIGSTOP;
}

/** Every disposition: rt_sigaction(sig, NULL, &old) for each, declared (batched with the other units' calls). */
function sigactionCalls(set: (sas: Msg<'sa_entry'>[]) => void): ParasiteCalls {
  const sigs = Array.from({ length: NSIG }, (_, i) => i + 1).filter(hasDisposition);
  const olds = sigs.map(() => outBuf(KSIGACTION.size));
  return {
    calls: sigs.map((sig, i) => ['rt_sigaction', sig, 0, olds[i], 8]),
    done: (rs, t) => set(sigs.map((sig, i) => {
      remoteResult(rs[i], 'rt_sigaction', `of signal ${sig} in task ${t.pid}`);
      const a = KSIGACTION.decode(olds[i].data);
      return { sigaction: a.handler, flags: a.flags, restorer: a.restorer, mask: a.mask };
    })),
  };
}

function altStackCalls(set: (sas: Msg<'thread_sas_entry'>) => void): ParasiteCalls {
  const old = outBuf(STACK_T.size);
  return {
    calls: [['sigaltstack', 0, old]],
    done: ([r], t) => {
      remoteResult(r, 'sigaltstack', `in task ${t.pid}`);
      const s = STACK_T.decode(old.data);
      set({ ss_sp: s.ss_sp, ss_flags: s.ss_flags >>> 0, ss_size: s.ss_size });
    },
  };
}

function pendingSignals(tid: number, shared: boolean): Msg<'signal_queue_entry'> | undefined {
  const sigs = ptrace.peekSigInfo(tid, shared);
  return sigs.length ? { signals: sigs.map((siginfo) => ({ siginfo })) } : undefined;
}

/** Each int3 of a remote call would reset an ignored SIGTRAP to SIG_DFL: that
 *  one is set at the very end, without int3 (see restoreLateSigaction). */
export function isLateSigaction(sig: number, sa: Msg<'sa_entry'>): boolean {
  return sig === SIG.SIGTRAP && sa.sigaction === SIG_IGN;
}

function setSigaction(t: RemoteTask, sig: number, sa: Msg<'sa_entry'>): void {
  t.call('rt_sigaction', sig, inBuf(KSIGACTION.encode({ handler: sa.sigaction, flags: sa.flags, restorer: sa.restorer, mask: sa.mask })), 0, 8);
}

/** Every disposition at once (one stop on the trampoline rather than one per signal). */
function setSigactions(t: RemoteTask, sas: [number, Msg<'sa_entry'>][]): void {
  const rs = t.callMany(sas.map(([sig, sa]) => ['rt_sigaction', sig, inBuf(KSIGACTION.encode({ handler: sa.sigaction, flags: sa.flags, restorer: sa.restorer, mask: sa.mask })), 0, 8]));
  rs.forEach((r, i) => remoteResult(r, 'rt_sigaction', `of signal ${sas[i][0]} in task ${t.pid}`));
}

function sigactionsBySignal(tr: TaskRestore): [number, Msg<'sa_entry'>][] {
  const sas = tr.img.threads[0].core.tc?.sigactions ?? [];
  const out: [number, Msg<'sa_entry'>][] = [];
  let i = 0;
  for (let sig = 1; sig <= NSIG && i < sas.length; sig++) if (hasDisposition(sig)) out.push([sig, sas[i++]]);
  return out;
}

/** The dispositions that could not be set through int3 (see isLateSigaction), on `t` in syscall-stop mode. */
export function restoreLateSigaction(tr: TaskRestore, t: RemoteTask): void {
  for (const [sig, sa] of sigactionsBySignal(tr)) if (isLateSigaction(sig, sa)) setSigaction(t, sig, sa);
}

/** The sigaltstack call that puts a thread's alternate signal stack back (none if it had none). */
export function altStackCall(sas: Msg<'thread_sas_entry'> | undefined): RemoteCall | undefined {
  if (!sas) return undefined;
  return ['sigaltstack', inBuf(STACK_T.encode({ ss_sp: sas.ss_sp, ss_flags: sas.ss_flags & SS_DISABLE, ss_size: sas.ss_size })), 0];
}

/**
 * Queue pending signals again, with their siginfo. The task sends them to
 * itself (a siginfo with si_code >= 0 may only be queued by the target).
 * Called while every signal is blocked in the task.
 */
function restorePending(t: RemoteTask, tgid: number, tid: number, queue: Msg<'signal_queue_entry'> | undefined, shared: boolean): void {
  for (const s of queue?.signals ?? []) {
    const signo = s.siginfo.readInt32LE(0);
    if (shared) t.call('rt_sigqueueinfo', tgid, signo, inBuf(s.siginfo));
    else t.call('rt_tgsigqueueinfo', tgid, tid, signo, inBuf(s.siginfo));
  }
}

export const signalsUnit = defineUnit({
  name: 'signals',
  parasiteCalls: (_ctx, pd) => sigactionCalls((sas) => { pd.core.get(pd.pid)!.tc!.sigactions = sas; }),
  parasiteThreadCalls: (_ctx, pd, tid) => altStackCalls((sas) => { pd.core.get(tid)!.thread_core!.sas = sas; }),
  dumpPhases: [{
    name: 'pending-signals', after: ['parasite'], before: ['write-core'],
    each(_ctx, pd) {
      pd.core.get(pd.pid)!.tc!.signals_s = pendingSignals(pd.pid, true);
      for (const tid of pd.frozen.threads) pd.core.get(tid)!.thread_core!.signals_p = pendingSignals(tid, false);
    },
  }],
  restorePhases: [
    {
      name: 'sigactions',
      each(_ctx, tr) { setSigactions(tr.task, sigactionsBySignal(tr).filter(([sig, sa]) => !isLateSigaction(sig, sa))); },
    },
    // Every signal is blocked in the task until its own mask is set at the end.
    {
      name: 'pending-signals', after: ['sigactions', 'itimers', 'threads'],
      each(_ctx, tr) {
        restorePending(tr.task, tr.img.pid, tr.img.pid, tr.img.threads[0].core.tc?.signals_s, true);
        for (const th of tr.img.threads) restorePending(tr.task, tr.img.pid, th.tid, th.core.thread_core?.signals_p, false);
      },
    },
  ],
});
