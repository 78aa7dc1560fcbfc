// Per-thread attributes CRIU does not carry: CPU affinity, timer slack and
// I/O priority, into stasis's extension fields of thread_core_entry (see
// EXTENSIONS in images/schema.ts). Written always, set always: the restored
// value is the dumped one, not whatever the restorer happened to inherit.
// Affinity and I/O priority are read and set from stasis by thread id; the
// timer slack only through the thread itself (prctl: /proc/PID/timerslack_ns
// exists for the leader alone). Set late, just before the scheduling phase:
// a thread pinned to one CPU would slow every later remote call in it, and a
// real-time policy (set by 'sched') makes the kernel zero the slack itself.
import * as fs from 'node:fs';
import { abi, schedGetAffinity, schedSetAffinity, ioprioGet, ioprioSet } from '../sys';
import { StasisError, ErrorCodes, remoteResult } from '../errors';
import type { Msg } from '../images/schema';
import { defineUnit } from '../unit/unit';
import type { Loading } from '../unit/checkpoint';
import type { RemoteTask } from '../compel/remote';

const { PR, IOPRIO, CPU_SET_BYTES, CPU_SET_WORD_BITS } = abi;
const MAX_WORDS = CPU_SET_BYTES / (CPU_SET_WORD_BITS / 8);
const IOPRIO_MAX = 0xffff;

/** The CPUs of a mask, as "0,3-5". */
function cpuList(words: readonly bigint[]): string {
  const cpus: number[] = [];
  words.forEach((w, i) => { for (let b = 0; b < CPU_SET_WORD_BITS; b++) if ((w >> BigInt(b)) & 1n) cpus.push(i * CPU_SET_WORD_BITS + b); });
  return cpus.join(',') || 'none';
}

/** The CPUs online here, as a mask ("0-1,4" in sysfs). */
function onlineCpus(): bigint[] {
  const words: bigint[] = new Array(MAX_WORDS).fill(0n);
  for (const part of fs.readFileSync('/sys/devices/system/cpu/online', 'utf8').trim().split(',')) {
    const [a, b = a] = part.split('-').map(Number);
    for (let c = a; c <= b && c < MAX_WORDS * CPU_SET_WORD_BITS; c++) words[Math.floor(c / CPU_SET_WORD_BITS)] |= 1n << BigInt(c % CPU_SET_WORD_BITS);
  }
  return words;
}

const sameMask = (a: readonly bigint[], b: readonly bigint[]) => {
  for (let i = 0; i < Math.max(a.length, b.length); i++) if ((a[i] ?? 0n) !== (b[i] ?? 0n)) return false;
  return true;
};

/** PR_GET_TIMERSLACK's raw answer in thread `tid`, as the slack in ns. */
function slackOf(r: bigint, tid: number): bigint {
  return BigInt.asUintN(64, remoteResult(r, 'prctl', `PR_GET_TIMERSLACK in thread ${tid}`));
}

function timerSlack(t: RemoteTask, tid: number): bigint {
  return slackOf(t.callRaw('prctl', PR.GET_TIMERSLACK, 0, 0, 0, 0), tid);
}

function load(ld: Loading): void {
  for (const p of ld.processes) {
    for (const th of p.threads) {
      const tc = th.core.thread_core;
      const where = ld.images.path(`core-${th.tid}.img`);
      const aff = tc?.cpu_affinity ?? [];
      if (aff.length > MAX_WORDS) throw new StasisError(ErrorCodes.BAD_IMAGE, `${where}: CPU affinity of ${aff.length * CPU_SET_WORD_BITS} CPUs; at most ${MAX_WORDS * CPU_SET_WORD_BITS} supported`);
      if (aff.length && aff.every((w) => w === 0n)) throw new StasisError(ErrorCodes.BAD_IMAGE, `${where}: empty CPU affinity`);
      const io = tc?.ioprio;
      if (io !== undefined && (io > IOPRIO_MAX || io >> IOPRIO.CLASS_SHIFT > IOPRIO.CLASS.IDLE)) throw new StasisError(ErrorCodes.BAD_IMAGE, `${where}: I/O priority 0x${io.toString(16)} has no valid class`);
    }
  }
}

/** A mask with CPUs this machine lacks cannot be set: refused before anything is created. */
function validate(ld: Loading): void {
  const online = onlineCpus();
  for (const p of ld.processes) {
    for (const th of p.threads) {
      const aff = th.core.thread_core?.cpu_affinity;
      if (!aff?.length) continue;
      const missing = aff.map((w, i) => w & ~(online[i] ?? 0n));
      if (missing.some((w) => w !== 0n)) {
        const what = th.tid === p.pid ? `pid ${p.pid}` : `thread ${th.tid} of pid ${p.pid}`;
        throw new StasisError(ErrorCodes.UNSUPPORTED, `cannot restore the CPU affinity ${cpuList(aff)} of ${what}: CPU ${cpuList(missing)} not online here (online: ${cpuList(online)})`);
      }
    }
  }
}

function restoreThread(tid: number, t: RemoteTask, tc: Msg<'thread_core_entry'>): void {
  if (tc.cpu_affinity?.length) {
    schedSetAffinity(tid, tc.cpu_affinity);
    const now = schedGetAffinity(tid);
    // The cgroup's cpuset may narrow what was asked.
    if (!sameMask(now, tc.cpu_affinity)) throw new StasisError(ErrorCodes.RESTORE_FAILED, `thread ${tid}: CPU affinity is ${cpuList(now)} after restoring ${cpuList(tc.cpu_affinity)} (a cpuset here?)`);
  }
  // 0 is what a real-time thread has (the kernel's, set with the policy by
  // 'sched'); prctl would take 0 for "the default".
  if (tc.timer_slack_ns !== undefined && tc.timer_slack_ns !== 0n) {
    t.call('prctl', PR.SET_TIMERSLACK, tc.timer_slack_ns, 0, 0, 0);
    const now = timerSlack(t, tid);
    if (now !== tc.timer_slack_ns) throw new StasisError(ErrorCodes.RESTORE_FAILED, `thread ${tid}: timer slack is ${now} ns after restoring ${tc.timer_slack_ns}`);
  }
  if (tc.ioprio !== undefined) {
    ioprioSet(tid, tc.ioprio);
    const now = ioprioGet(tid);
    if (now !== tc.ioprio) throw new StasisError(ErrorCodes.RESTORE_FAILED, `thread ${tid}: I/O priority is 0x${now.toString(16)} after restoring 0x${tc.ioprio.toString(16)}`);
  }
}

export const threadAttrsUnit = defineUnit({
  name: 'thread-attrs',
  parasiteThreadCalls: (_ctx, pd, tid) => ({
    calls: [['prctl', PR.GET_TIMERSLACK, 0, 0, 0, 0]],
    done: ([r]) => { pd.core.get(tid)!.thread_core!.timer_slack_ns = slackOf(r, tid); },
  }),
  dumpPhases: [{
    name: 'thread-attrs', after: ['parasite'], before: ['write-core'],
    each(_ctx, pd) {
      for (const tid of pd.frozen.threads) {
        Object.assign((pd.core.get(tid)!.thread_core ??= {}), { cpu_affinity: schedGetAffinity(tid), ioprio: ioprioGet(tid) });
      }
    },
  }],
  load,
  validate,
  restorePhases: [{
    name: 'thread-attrs', afterAll: true, before: ['sched'],
    each(_ctx, tr) {
      // By the ids of our pid namespace (the images' may be another's).
      for (const th of tr.img.threads) {
        const tc = th.core.thread_core;
        const t = tr.threads.get(th.tid)!;
        if (tc) restoreThread(t.pid, t, tc);
      }
    },
  }],
});
