// Timers: interval timers (ITIMER_REAL/VIRTUAL/PROF) and POSIX timers
// (timer_create), read by the parasite; POSIX timers are listed by
// /proc/PID/timers and re-created with their ids (PR_TIMER_CREATE_RESTORE_IDS).
import * as fs from 'node:fs';
import { abi, processVmReadv } from '../sys';
import { StasisError, ErrorCodes } from '../errors';
import type { Parasite } from '../compel/parasite';
import type { Entry } from '../images/image';

const { ITIMER, ITIMERVAL_SIZE } = abi;

export function dumpItimers(p: Parasite, scratch: bigint): { real: Entry; virt: Entry; prof: Entry } {
  const buf = Buffer.alloc(ITIMERVAL_SIZE);
  const one = (which: number): Entry => {
    p.syscall('getitimer', which, scratch);
    processVmReadv(p.pid, scratch, buf);
    return {
      isec: buf.readBigUInt64LE(0), iusec: buf.readBigUInt64LE(8),
      vsec: buf.readBigUInt64LE(16), vusec: buf.readBigUInt64LE(24),
    };
  };
  return { real: one(ITIMER.REAL), virt: one(ITIMER.VIRTUAL), prof: one(ITIMER.PROF) };
}

const SIGEV = { SIGNAL: 0, NONE: 1, THREAD: 2, THREAD_ID: 4 } as const;
const ITIMERSPEC_SIZE = 32;
const SIGEVENT_SIZE = 64;
const PR_TIMER_CREATE_RESTORE_IDS = 77;

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

export function dumpPosixTimers(p: Parasite, scratch: bigint): Entry[] {
  let text = '';
  try { text = fs.readFileSync(`/proc/${p.pid}/timers`, 'utf8'); } catch { return []; }
  const buf = Buffer.alloc(ITIMERSPEC_SIZE);
  return parseProcTimers(text).map((t) => {
    p.syscall('timer_gettime', t.id, scratch);
    processVmReadv(p.pid, scratch, buf);
    const overrun = Number(p.syscall('timer_getoverrun', t.id));
    return {
      it_id: t.id, clock_id: t.clock, si_signo: t.signo, it_sigev_notify: t.notify, sival_ptr: t.sival, overrun,
      isec: buf.readBigUInt64LE(0), insec: buf.readBigUInt64LE(8), vsec: buf.readBigUInt64LE(16), vnsec: buf.readBigUInt64LE(24),
      notify_thread_id: t.notify & SIGEV.THREAD_ID ? t.tid : undefined,
    };
  });
}

// ---------------------------------------------------------------- restore

import type { RestoreCtx, TaskRestore } from '../restore/context';
import type { Decoded } from '../images/image';

export function restoreItimers(_ctx: RestoreCtx, tr: TaskRestore): void {
  const timers = tr.img.threads[0].core.tc.timers;
  if (!timers) return;
  const set = (which: number, e: Decoded) => {
    if (!e) return;
    const b = Buffer.alloc(ITIMERVAL_SIZE);
    b.writeBigUInt64LE(BigInt(e.isec), 0); b.writeBigUInt64LE(BigInt(e.iusec), 8);
    b.writeBigUInt64LE(BigInt(e.vsec), 16); b.writeBigUInt64LE(BigInt(e.vusec), 24);
    if (BigInt(e.vsec) === 0n && BigInt(e.vusec) === 0n) {
      if (BigInt(e.isec) === 0n && BigInt(e.iusec) === 0n) return; // disarmed
      // Expired with its signal still pending: the kernel re-arms ITIMER_REAL
      // only when SIGALRM is dequeued, so it reads 0. Arm it with its interval.
      b.writeBigUInt64LE(BigInt(e.isec), 16);
      b.writeBigUInt64LE(BigInt(e.iusec), 24);
    }
    tr.task.call('setitimer', which, tr.task.put(b, 512), 0);
  };
  set(ITIMER.REAL, timers.real);
  set(ITIMER.VIRTUAL, timers.virt);
  set(ITIMER.PROF, timers.prof);
  restorePosixTimers(tr, timers.posix ?? []);
}

/** Re-create POSIX timers with their old ids, then arm them. */
function restorePosixTimers(tr: TaskRestore, timers: Decoded[]): void {
  if (timers.length === 0) return;
  const t = tr.task;
  // With this on, timer_create takes the id to allocate from *timer_id.
  t.call('prctl', PR_TIMER_CREATE_RESTORE_IDS, 1, 0, 0, 0);
  try {
    // In id order, which is creation order: the kernel lists (and keeps) them as created.
    for (const e of [...timers].sort((x, y) => x.it_id - y.it_id)) {
      const ev = Buffer.alloc(SIGEVENT_SIZE);
      ev.writeBigUInt64LE(BigInt(e.sival_ptr), 0);
      ev.writeInt32LE(e.si_signo, 8);
      ev.writeInt32LE(e.it_sigev_notify, 12);
      if (e.it_sigev_notify & SIGEV.THREAD_ID) ev.writeInt32LE(e.notify_thread_id, 16);
      const idAt = t.scratch + 256n;
      const id = Buffer.alloc(8);
      id.writeInt32LE(e.it_id, 0);
      t.put(id, 256);
      t.call('timer_create', e.clock_id, t.put(ev, 512), idAt);
      const got = t.get(4, 256).readInt32LE(0);
      if (got !== e.it_id) throw new StasisError(ErrorCodes.RESTORE_FAILED, `POSIX timer ${e.it_id} came back as ${got}`);
      const its = Buffer.alloc(ITIMERSPEC_SIZE);
      its.writeBigUInt64LE(BigInt(e.isec), 0); its.writeBigUInt64LE(BigInt(e.insec), 8);
      its.writeBigUInt64LE(BigInt(e.vsec), 16); its.writeBigUInt64LE(BigInt(e.vnsec), 24);
      if (BigInt(e.vsec) !== 0n || BigInt(e.vnsec) !== 0n) t.call('timer_settime', e.it_id, 0, t.put(its, 768), 0);
    }
  } finally {
    t.call('prctl', PR_TIMER_CREATE_RESTORE_IDS, 0, 0, 0, 0);
  }
}
