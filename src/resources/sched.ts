// Scheduling of each thread: policy (with SCHED_RESET_ON_FORK), real-time
// priority and nice, into thread_core.sched_policy/sched_prio/sched_nice
// (CRIU's: the policy as sched_getscheduler gives it, the priority only for
// FIFO/RR). Read and set from stasis, per thread id: nothing runs in the
// task. Set late (after every other phase, before the credentials): an
// idle-policy thread would make the remote calls of later phases crawl.
import { abi, sys, trySchedSetScheduler } from '../sys';
import { readStat, readStatus } from '../proc/proc';
import { StasisError, ErrorCodes, SyscallError } from '../errors';
import type { Msg } from '../images/schema';
import { defineUnit } from '../unit/unit';
import type { Loading } from '../unit/checkpoint';

const { SCHED, PRIO_PROCESS, CAP, ERRNO } = abi;
const RLIMIT_NICE = abi.RLIMIT_NAMES.indexOf('NICE');
const RLIMIT_RTPRIO = abi.RLIMIT_NAMES.indexOf('RTPRIO');
const POLICY_NAMES: Record<number, string> = { [SCHED.OTHER]: 'SCHED_OTHER', [SCHED.FIFO]: 'SCHED_FIFO', [SCHED.RR]: 'SCHED_RR', [SCHED.BATCH]: 'SCHED_BATCH', [SCHED.IDLE]: 'SCHED_IDLE' };

interface Sched { policy: number; prio: number; nice: number }

const isRt = (policy: number) => { const p = policy & ~SCHED.RESET_ON_FORK; return p === SCHED.FIFO || p === SCHED.RR; };

/** A thread's scheduling as the kernel has it now. */
export function liveSched(pid: number, tid: number): Sched {
  const policy = sys('sched_getscheduler', tid);
  const st = readStat(pid, tid);
  return { policy, prio: isRt(policy) ? st.rtPriority : 0, nice: st.nice };
}

function dumpSched(pid: number, tid: number): Partial<Msg<'thread_core_entry'>> {
  const s = liveSched(pid, tid);
  const base = s.policy & ~SCHED.RESET_ON_FORK;
  if (!(base in POLICY_NAMES)) {
    throw new StasisError(ErrorCodes.UNSUPPORTED, `thread ${tid} of pid ${pid} runs under scheduling policy ${base === SCHED.DEADLINE ? 'SCHED_DEADLINE' : base}; not supported`);
  }
  return { sched_policy: s.policy, sched_nice: s.nice, ...(isRt(s.policy) ? { sched_prio: s.prio } : {}) };
}

function wanted(core: Msg<'core_entry'>): Sched | undefined {
  const tc = core.thread_core;
  if (tc?.sched_policy === undefined) return undefined;
  return { policy: tc.sched_policy, prio: isRt(tc.sched_policy) ? tc.sched_prio ?? 0 : 0, nice: tc.sched_nice ?? 0 };
}

function load(ld: Loading): void {
  for (const p of ld.processes) {
    for (const th of p.threads) {
      const w = wanted(th.core);
      if (!w) continue;
      const where = ld.images.path(`core-${th.tid}.img`);
      const base = w.policy & ~SCHED.RESET_ON_FORK;
      if (!(base in POLICY_NAMES)) throw new StasisError(ErrorCodes.BAD_IMAGE, `${where}: scheduling policy ${w.policy} is not supported`);
      if (isRt(w.policy) ? w.prio < 1 || w.prio > 99 : w.prio !== 0) throw new StasisError(ErrorCodes.BAD_IMAGE, `${where}: priority ${w.prio} for ${POLICY_NAMES[base]}`);
      if (w.nice < -20 || w.nice > 19) throw new StasisError(ErrorCodes.BAD_IMAGE, `${where}: nice ${w.nice} out of range`);
    }
  }
}

/**
 * Without CAP_SYS_NICE, the kernel allows a lower nice or a real-time
 * policy only within the task's own RLIMIT_NICE and RLIMIT_RTPRIO (the
 * restored ones: they are set before).
 */
function validate(ld: Loading): void {
  const eff = BigInt('0x' + (readStatus(process.pid).get('CapEff') ?? '0'));
  if (eff & (1n << BigInt(CAP.SYS_NICE))) return;
  const ourNice = readStat(process.pid).nice;
  for (const p of ld.processes) {
    const rl = p.threads[0].core.tc?.rlimits?.rlimits ?? [];
    const lim = (i: number) => rl[i]?.cur ?? 0n;
    for (const th of p.threads) {
      const w = wanted(th.core);
      if (!w) continue;
      const what = `${th.tid === p.pid ? `pid ${p.pid}` : `thread ${th.tid} of pid ${p.pid}`}`;
      if (w.nice < ourNice && BigInt(20 - w.nice) > lim(RLIMIT_NICE)) {
        throw new StasisError(ErrorCodes.NOT_PERMITTED, `cannot restore nice ${w.nice} of ${what}: lower than stasis's ${ourNice} needs CAP_SYS_NICE or its RLIMIT_NICE ≥ ${20 - w.nice} (it has ${lim(RLIMIT_NICE)})`);
      }
      if (isRt(w.policy) && BigInt(w.prio) > lim(RLIMIT_RTPRIO)) {
        throw new StasisError(ErrorCodes.NOT_PERMITTED, `cannot restore ${POLICY_NAMES[w.policy & ~SCHED.RESET_ON_FORK]} priority ${w.prio} of ${what}: needs CAP_SYS_NICE or its RLIMIT_RTPRIO ≥ ${w.prio} (it has ${lim(RLIMIT_RTPRIO)})`);
      }
    }
  }
}

function restoreSched(pid: number, tid: number, w: Sched): void {
  const cur = liveSched(pid, tid);
  if (cur.nice !== w.nice) sys('setpriority', PRIO_PROCESS, tid, w.nice, 0, 0, 0, `thread ${tid}: nice ${w.nice}`);
  if (cur.policy !== w.policy || cur.prio !== w.prio) {
    const r = trySchedSetScheduler(tid, w.policy, w.prio);
    if (r < 0) {
      const why = r === -ERRNO.EPERM ? ' (not permitted: CAP_SYS_NICE or RLIMIT_RTPRIO, or a real-time limit of the cgroup)' : '';
      throw new SyscallError('sched_setscheduler', -r, `thread ${tid}: ${POLICY_NAMES[w.policy & ~SCHED.RESET_ON_FORK]}${w.policy & SCHED.RESET_ON_FORK ? '|SCHED_RESET_ON_FORK' : ''} priority ${w.prio}${why}`);
    }
  }
  const now = liveSched(pid, tid);
  if (now.policy !== w.policy || now.prio !== w.prio || now.nice !== w.nice) {
    throw new StasisError(ErrorCodes.RESTORE_FAILED, `thread ${tid}: scheduling is policy ${now.policy} priority ${now.prio} nice ${now.nice} after restoring policy ${w.policy} priority ${w.prio} nice ${w.nice}`);
  }
}

export const schedUnit = defineUnit({
  name: 'sched',
  dumpPhases: [{
    name: 'sched', after: ['parasite'], before: ['write-core'],
    each(_ctx, pd) {
      for (const tid of pd.frozen.threads) Object.assign((pd.core.get(tid)!.thread_core ??= {}), dumpSched(pd.pid, tid));
    },
  }],
  load,
  validate,
  restorePhases: [{
    name: 'sched', afterAll: true,
    each(_ctx, tr) {
      // By the ids of our pid namespace (the images' may be another's).
      for (const th of tr.img.threads) {
        const w = wanted(th.core);
        if (w) restoreSched(tr.task.pid, tr.threads.get(th.tid)!.pid, w);
      }
    },
  }],
});
