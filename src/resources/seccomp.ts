// seccomp: each thread's stack of classic-BPF filters (PTRACE_SECCOMP_GET_FILTER,
// oldest first, with the flags each was installed with), in criu's
// seccomp.img (newest first, each older one's `prev` naming the next newer,
// thread_core.seccomp_filter naming the oldest); strict mode too. While we
// work in such a task its filters are suspended (PTRACE_O_SUSPEND_SECCOMP).
// Restore installs the filters in each thread, oldest first, at the end (a
// filter may forbid what restoring needs; with the filters suspended for our
// calls the order is not the issue, privileges are: installing needs
// CAP_SYS_ADMIN or no_new_privs, so before credentials are dropped).
// Threads with identical stacks get them at once with TSYNC, as criu.
import * as fs from 'node:fs';
import { abi, ptrace, processVmWritev } from '../sys';
import { inBuf, type RemoteTask } from '../compel/remote';
import { parts, type Msg } from '../images/image';
import { StasisError, ErrorCodes } from '../errors';
import { defineUnit } from '../unit/unit';
import type { ProcessDump } from '../unit/dump-ctx';

const { SECCOMP, BPF_RET_K, SOCK_FPROG, SOCK_FILTER_SIZE, PTRACE_O, PR, PROT, MAP, PAGE_SIZE } = abi;
type Filter = Msg<'seccomp_filter'>;

/** A return of SECCOMP_RET_USER_NOTIF hands syscalls to a listener we cannot re-create. */
export function usesUserNotif(prog: Buffer): boolean {
  for (let i = 0; i + SOCK_FILTER_SIZE <= prog.length; i += SOCK_FILTER_SIZE) {
    if (prog.readUInt16LE(i) === BPF_RET_K && ((prog.readUInt32LE(i + 4) & SECCOMP.RET_ACTION_FULL) >>> 0) === SECCOMP.RET_USER_NOTIF) return true;
  }
  return false;
}

function stackOf(tid: number): { prog: Buffer; flags: number }[] {
  const out: { prog: Buffer; flags: number }[] = [];
  for (let i = 0; ; i++) {
    const prog = ptrace.seccompGetFilter(tid, i);
    if (!prog) return out;
    if (usesUserNotif(prog)) throw new StasisError(ErrorCodes.UNSUPPORTED, `thread ${tid} has a seccomp filter that hands syscalls to a user-space listener (SECCOMP_RET_USER_NOTIF); not supported`);
    out.push({ prog, flags: Number(ptrace.seccompGetMetadata(tid, i)) & SECCOMP.FILTER_FLAG_LOG });
  }
}

const same = (a: { prog: Buffer; flags: number }[], b: { prog: Buffer; flags: number }[]) => a.length === b.length && a.every((f, i) => f.flags === b[i].flags && f.prog.equals(b[i].prog));

function dumpProcess(pd: ProcessDump, filters: Filter[]): void {
  const mode = (tid: number) => Number((/^Seccomp:\s*(\d)/m.exec(fs.readFileSync(`/proc/${pd.pid}/task/${tid}/status`, 'utf8')) ?? [])[1] ?? 0);
  const stacks = new Map(pd.frozen.threads.map((tid) => [tid, mode(tid) === SECCOMP.MODE_FILTER ? stackOf(tid) : []]));
  const leader = stacks.get(pd.pid)!;
  // Every thread with the leader's very stack: the leader's alone, installed with TSYNC.
  const tsync = pd.frozen.threads.length > 1 && leader.length > 0 && [...stacks.values()].every((s) => same(s, leader));
  for (const tid of pd.frozen.threads) {
    const tc = pd.core.get(tid)!.thread_core!;
    tc.seccomp_mode = mode(tid);
    const stack = stacks.get(tid)!;
    if (tsync && tid !== pd.pid) {
      tc.seccomp_mode = SECCOMP.MODE_DISABLED; // it gets the leader's stack through TSYNC
      continue;
    }
    if (!stack.length) continue;
    const base = filters.length;
    // Newest first; each older one points to the next newer; the thread names the oldest.
    [...stack].reverse().forEach((f, i) => filters.push({ filter: f.prog, prev: i ? base + i - 1 : undefined, flags: f.flags | (tsync ? SECCOMP.FILTER_FLAG_TSYNC : 0) }));
    tc.seccomp_filter = base + stack.length - 1;
  }
}

/** A thread's stack from the image, oldest first. */
function chain(filters: Filter[], oldest: number, where: string): Filter[] {
  const out: Filter[] = [];
  for (let i: number | undefined = oldest; i !== undefined; i = filters[i].prev) {
    if (i < 0 || i >= filters.length || out.length > filters.length) throw new StasisError(ErrorCodes.BAD_IMAGE, `${where}: broken seccomp filter chain at ${i}`);
    out.push(filters[i]);
  }
  return out;
}

/** seccomp(SECCOMP_SET_MODE_FILTER) in a thread; the program in a mapping of its own (it may exceed the scratch page). */
function install(t: RemoteTask, f: Filter): void {
  const len = Math.ceil(f.filter.length / PAGE_SIZE) * PAGE_SIZE;
  const area = t.call('mmap', 0, len, PROT.READ | PROT.WRITE, MAP.PRIVATE | MAP.ANONYMOUS, -1, 0);
  try {
    processVmWritev(t.pid, area, f.filter);
    const prog = inBuf(SOCK_FPROG.encode({ len: f.filter.length / SOCK_FILTER_SIZE, filter: area }));
    t.call('seccomp', SECCOMP.SET_MODE_FILTER, f.flags ?? 0, prog);
  } finally {
    t.call('munmap', area, len);
  }
}

export const seccompUnit = defineUnit({
  name: 'seccomp',
  dumpState: () => [] as Filter[],
  dumpPhases: [
    { name: 'seccomp', after: ['parasite'], before: ['write-core'], each: (_ctx, pd, filters) => dumpProcess(pd, filters) },
    { name: 'write-seccomp', after: ['seccomp'], once: (ctx, filters) => { if (filters.length) ctx.write('seccomp.img', 'SECCOMP', parts('seccomp_entry', [{ seccomp_filters: filters }])); } },
  ],
  load(ld) {
    const filters = ld.images.exists('seccomp.img') ? ld.images.one('seccomp.img', 'SECCOMP', 'seccomp_entry').seccomp_filters ?? [] : [];
    for (const p of ld.processes) for (const th of p.threads) {
      const tc = th.core.thread_core;
      if (tc?.seccomp_mode === SECCOMP.MODE_FILTER && tc.seccomp_filter !== undefined) chain(filters, tc.seccomp_filter, ld.images.path(`core-${th.tid}.img`));
      for (const f of filters) if (f.filter.length % SOCK_FILTER_SIZE || !f.filter.length) throw new StasisError(ErrorCodes.BAD_IMAGE, `${ld.images.path('seccomp.img')}: a filter of ${f.filter.length} bytes`);
    }
    return filters;
  },
  restorePhases: [{
    name: 'seccomp', after: ['threads', 'pending-signals', 'itimers', 'thread-state'],
    each(ctx, tr, filters) {
      for (const th of tr.img.threads) {
        const tc = th.core.thread_core;
        if (!tc?.seccomp_mode) continue;
        const t = tr.threads.get(th.tid)!;
        // From now on the task's own filters must not see our calls.
        ptrace.setOptions(t.pid, PTRACE_O.TRACECLONE | PTRACE_O.TRACEFORK | PTRACE_O.EXITKILL | PTRACE_O.SUSPEND_SECCOMP);
        if (tc.seccomp_mode === SECCOMP.MODE_STRICT) { t.call('prctl', PR.SET_SECCOMP, SECCOMP.MODE_STRICT, 0, 0, 0); continue; }
        if (tc.seccomp_filter === undefined) continue; // its stack comes with the leader's (TSYNC)
        for (const f of chain(filters, tc.seccomp_filter, `core-${th.tid}.img`)) install(t, f);
      }
    },
  }],
});
