// Timers: interval timers (ITIMER_REAL/VIRTUAL/PROF) and POSIX timers
// (timer_create), read by the parasite; POSIX timers are listed by
// /proc/PID/timers and re-created with their ids (PR_TIMER_CREATE_RESTORE_IDS).
import * as fs from 'node:fs';
import { abi } from '../sys';
import { inBuf, ioBuf, outBuf, type RemoteTask } from '../compel/remote';
import { StasisError, ErrorCodes, remoteResult } from '../errors';
import type { Msg } from '../images/schema';
import { defineUnit, type ParasiteCalls, type RemoteCall } from '../unit/unit';
import type { ProcessDump } from '../unit/dump-ctx';
import type { TaskRestore } from '../unit/restore-ctx';

const { ITIMER, ITIMERVAL, ITIMERSPEC, SIGEVENT, SIGEV, PR } = abi;

/**
 * The three itimers (getitimer) and each POSIX timer's value and overrun
 * (timer_gettime, timer_getoverrun; the timers as /proc/PID/timers lists
 * them), declared: batched with the other units' calls.
 */
function timerCalls(pd: ProcessDump): ParasiteCalls {
  const which = [ITIMER.REAL, ITIMER.VIRTUAL, ITIMER.PROF];
  const vs = which.map(() => outBuf(ITIMERVAL.size));
  let text = '';
  try { text = fs.readFileSync(`/proc/${pd.pid}/timers`, 'utf8'); } catch { /* none */ }
  const posix = parseProcTimers(text).map((pt) => ({ pt, v: outBuf(ITIMERSPEC.size) }));
  const calls: RemoteCall[] = which.map((w, i) => ['getitimer', w, vs[i]]);
  for (const { pt, v } of posix) calls.push(['timer_gettime', pt.id, v], ['timer_getoverrun', pt.id]);
  return {
    calls,
    done(rs, t) {
      rs.forEach((r, i) => remoteResult(r, calls[i][0], `in task ${t.pid}`));
      const [real, virt, prof] = vs.map((v): Msg<'itimer_entry'> => ITIMERVAL.decode(v.data));
      const vtid = (tid: number) => pd.vtids.get(tid) ?? tid;
      const entries = posix.map(({ pt, v }, k): Msg<'posix_timer_entry'> => ({
        it_id: pt.id, clock_id: pt.clock, si_signo: pt.signo, it_sigev_notify: pt.notify, sival_ptr: pt.sival, overrun: Number(rs[which.length + 2 * k + 1]),
        ...ITIMERSPEC.decode(v.data), notify_thread_id: pt.notify & SIGEV.THREAD_ID ? vtid(pt.tid) : undefined,
      }));
      pd.core.get(pd.pid)!.tc!.timers = { real, virt, prof, posix: entries };
    },
  };
}

interface ProcTimer { id: number; signo: number; sival: bigint; notify: number; tid: number; clock: number }

export function parseProcTimers(text: string): ProcTimer[] {
  const out: ProcTimer[] = [];
  let cur: Partial<ProcTimer> | undefined;
  for (const line of text.split('\n')) {
    const [k, v] = [line.slice(0, line.indexOf(':')), line.slice(line.indexOf(':') + 1).trim()];
    if (k === 'ID') { cur = { id: Number(v) }; out.push(cur as ProcTimer); continue; }
    if (!cur) continue;
    if (k === 'signal') {
      const [signo, val] = v.split('/');
      cur.signo = Number(signo);
      cur.sival = BigInt('0x' + val);
    } else if (k === 'notify') {
      // "signal/pid.N", "none/pid.N", "thread/pid.N"; "/tid.N" adds SIGEV_THREAD_ID.
      const m = /^(\w+)\/(pid|tid)\.(\d+)/.exec(v);
      if (!m) throw new StasisError(ErrorCodes.UNSUPPORTED, `cannot parse /proc timers line 'notify: ${v}'`);
      const base = m[1] === 'signal' ? SIGEV.SIGNAL : m[1] === 'none' ? SIGEV.NONE : SIGEV.THREAD;
      cur.notify = base | (m[2] === 'tid' ? SIGEV.THREAD_ID : 0);
      cur.tid = Number(m[3]);
    } else if (k === 'ClockID') {
      cur.clock = Number(v);
    }
  }
  return out;
}

function restoreItimers(tr: TaskRestore): void {
  const timers = tr.img.threads[0].core.tc?.timers;
  if (!timers) return;
  const set = (which: number, e: Msg<'itimer_entry'>) => {
    let { vsec, vusec } = e;
    if (vsec === 0n && vusec === 0n) {
      if (e.isec === 0n && e.iusec === 0n) return; // disarmed
      // Expired with its signal still pending: the kernel re-arms ITIMER_REAL
      // only when SIGALRM is dequeued, so it reads 0. Arm it with its interval.
      [vsec, vusec] = [e.isec, e.iusec];
    }
    tr.task.call('setitimer', which, inBuf(ITIMERVAL.encode({ isec: e.isec, iusec: e.iusec, vsec, vusec })), 0);
  };
  set(ITIMER.REAL, timers.real);
  set(ITIMER.VIRTUAL, timers.virt);
  set(ITIMER.PROF, timers.prof);
  restorePosixTimers(tr.task, timers.posix ?? []);
}

/** Re-create POSIX timers with their old ids, then arm them. */
function restorePosixTimers(t: RemoteTask, timers: Msg<'posix_timer_entry'>[]): void {
  if (timers.length === 0) return;
  // With this on, timer_create takes the id to allocate from *timer_id.
  t.call('prctl', PR.TIMER_CREATE_RESTORE_IDS, 1, 0, 0, 0);
  try {
    // In id order, which is creation order: the kernel lists (and keeps) them as created.
    for (const e of [...timers].sort((x, y) => x.it_id - y.it_id)) {
      const ev = SIGEVENT.encode({ value: e.sival_ptr, signo: e.si_signo, notify: e.it_sigev_notify, tid: e.it_sigev_notify & SIGEV.THREAD_ID ? e.notify_thread_id : 0 });
      const id = ioBuf(abi.i32s([e.it_id, 0]));
      t.call('timer_create', e.clock_id, inBuf(ev), id);
      const got = id.data.readInt32LE(0);
      if (got !== e.it_id) throw new StasisError(ErrorCodes.RESTORE_FAILED, `POSIX timer ${e.it_id} came back as ${got}`);
      if (e.vsec !== 0n || e.vnsec !== 0n) t.call('timer_settime', e.it_id, 0, inBuf(ITIMERSPEC.encode(e)), 0);
    }
  } finally {
    t.call('prctl', PR.TIMER_CREATE_RESTORE_IDS, 0, 0, 0, 0);
  }
}

export const timersUnit = defineUnit({
  name: 'timers',
  parasiteCalls: (_ctx, pd) => timerCalls(pd),
  restorePhases: [{
    // Timers start ticking when set: as late as possible.
    name: 'itimers',
    after: ['address-space', 'pages', 'protections', 'advice', 'mm', 'fs', 'files', 'files-cleanup', 'task-attrs', 'rlimits', 'sigactions', 'thread-state', 'threads'],
    each: (_ctx, tr) => restoreItimers(tr),
  }],
});
