// Transparent freeze: PTRACE_SEIZE + PTRACE_INTERRUPT every thread of a
// process, without SIGSTOP, so job-control state is kept and interrupted
// syscalls restart correctly on release.
import * as fs from 'node:fs';
import { ptrace, tryWait4, sleepSync, abi, tryKill, describeWait, kcmp, pidfdOpen, tryProcessMrelease, getcpu, cpuMask, schedSetAffinity, schedGetAffinity, schedGetScheduler, trySchedSetScheduler, type WaitStatus } from './sys';
import { listTasks, listChildren, readStat, readStatus, residentPages, PF_KTHREAD, type Stat } from './proc/proc';
import { StasisError, ErrorCodes, SyscallError } from './errors';
import { log } from './log';

const { SIG, PTRACE_EVENT, WAIT, PTRACE_O, KCMP, SCHED, ERRNO } = abi;
const STOP_SIGNALS: number[] = [SIG.SIGSTOP, SIG.SIGTSTP, SIG.SIGTTIN, SIG.SIGTTOU];

export interface FrozenProcess {
  pid: number;
  /** Thread ids, the leader first. */
  threads: number[];
  /** The process was stopped by job control when we seized it. */
  stopped: boolean;
  /** The signal that stopped it (SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU), when stopped. */
  stopSignal?: number;
  /** Parent inside the dumped tree (0 for the root). */
  ppid: number;
}

/** Refuse what cannot be dumped, with a one-line reason. */
export function checkDumpable(pid: number): void {
  if (!Number.isInteger(pid) || pid <= 0) throw new StasisError(ErrorCodes.USAGE, `invalid pid ${pid}`);
  if (pid === process.pid) throw new StasisError(ErrorCodes.SELF, `pid ${pid} is stasis itself; it cannot dump itself`);
  let st;
  try {
    st = readStat(pid);
  } catch {
    throw new StasisError(ErrorCodes.NO_SUCH_PROCESS, `no process with pid ${pid}`);
  }
  // /proc/TID/stat exists for threads too and names the thread: ask status for its process.
  const tgid = Number(/Tgid:\s*(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? pid);
  if (tgid !== pid) throw new StasisError(ErrorCodes.NO_SUCH_PROCESS, `${pid} is a thread of process ${tgid}, not a process; dump -t ${tgid}`);
  if (st.flags & PF_KTHREAD) throw new StasisError(ErrorCodes.KERNEL_THREAD, `pid ${pid} (${st.comm}) is a kernel thread; only user processes can be dumped`);
  if (st.state === 'Z' || st.state === 'X') throw new StasisError(ErrorCodes.ZOMBIE, `pid ${pid} (${st.comm}) is a zombie; there is nothing left to dump`);
}

/** Wait for the stop that follows INTERRUPT; pass through signals that got there first. */
function waitInterruptStop(tid: number): 'running' | 'gone' | { stopSignal: number } {
  for (let i = 0; i < 64; i++) {
    const r = tryWait4(tid);
    if (typeof r === 'number') {
      if (r === -10 /* ECHILD */) return 'gone';
      throw new SyscallError('wait4', -r, `tid ${tid}`);
    }
    const ws: WaitStatus = r;
    if (ws.kind === 'exited' || ws.kind === 'signaled') return 'gone';
    if (ws.kind === 'ptrace-event' && ws.event === PTRACE_EVENT.STOP) {
      return STOP_SIGNALS.includes(ws.signal) ? { stopSignal: ws.signal } : 'running';
    }
    if (ws.kind === 'stopped') {
      // A signal arrived before our interrupt: let the task have it (as it would
      // without us); the interrupt is still pending and stops it right after.
      ptrace.cont(tid, ws.signal);
      continue;
    }
    throw new StasisError(ErrorCodes.UNEXPECTED_STOP, `tid ${tid}: unexpected ${describeWait(ws)} while seizing`);
  }
  throw new StasisError(ErrorCodes.SEIZE_FAILED, `tid ${tid} keeps receiving signals; could not stop it`);
}

/**
 * Seize every thread of `pid`. Threads created meanwhile are caught by
 * rescanning /proc/PID/task until a pass finds nothing new (a seized thread
 * cannot clone any more, so this ends).
 */
export function freezeProcess(pid: number): FrozenProcess {
  checkDumpable(pid);
  checkNoVmChild(pid);
  const seized: number[] = [];
  let stopSignal: number | undefined;
  try {
    for (;;) {
      let tids: number[];
      try { tids = listTasks(pid); } catch { throw new StasisError(ErrorCodes.TASK_DIED, `process ${pid} exited while being seized`); }
      const fresh = tids.filter((t) => !seized.includes(t));
      if (fresh.length === 0) break;
      for (const tid of fresh) {
        try {
          // A task under seccomp: its filters must not see the calls we make in it (nor kill it for them).
          ptrace.seize(tid, underSeccomp(tid) ? PTRACE_O.SUSPEND_SECCOMP : 0);
        } catch (e) {
          if (e instanceof SyscallError && e.code === 'ESRCH' && tid !== pid) continue; // thread ended
          if (e instanceof SyscallError && e.code === 'EPERM' && isZombie(tid)) {
            // It exited after it was listed: what its parent will find is a zombie.
            if (tid !== pid) continue;
            throw new StasisError(ErrorCodes.ZOMBIE, `pid ${pid} became a zombie while being seized; zombies in the tree are not supported yet`);
          }
          if (e instanceof SyscallError && e.code === 'EPERM') {
            const tracer = tracerOf(pid);
            throw new StasisError(ErrorCodes.NOT_PERMITTED, tracer
              ? `pid ${pid} is already traced by pid ${tracer}; cannot seize it`
              : `not permitted to ptrace pid ${pid} (need root or CAP_SYS_PTRACE, or check kernel.yama.ptrace_scope)`);
          }
          if (e instanceof SyscallError && e.code === 'ESRCH') throw new StasisError(ErrorCodes.NO_SUCH_PROCESS, `process ${pid} vanished while being seized`);
          throw e;
        }
        seized.push(tid);
        ptrace.interrupt(tid);
        const st = waitInterruptStop(tid);
        if (st === 'gone') {
          seized.splice(seized.indexOf(tid), 1);
          if (tid === pid) throw new StasisError(ErrorCodes.TASK_DIED, `process ${pid} exited while being seized`);
          continue;
        }
        if (typeof st === 'object') {
          stopSignal ??= st.stopSignal;
          drainStopSignals(pid, tid, st.stopSignal);
        }
      }
    }
  } catch (e) {
    for (const tid of seized) ptrace.tryDetach(tid, 0);
    throw e;
  }
  seized.sort((a, b) => (a === pid ? -1 : b === pid ? 1 : a - b));
  return { pid, threads: seized, stopped: stopSignal !== undefined, stopSignal, ppid: 0 };
}

/**
 * A process waiting in vfork() does not stop for PTRACE_INTERRUPT until its
 * child execs or exits: the dump would wait for ever. So a child sharing its
 * address space is refused before it is seized (as checkNotShared in
 * dump/dump.ts would refuse it later: the same line).
 */
function checkNoVmChild(pid: number): void {
  let children: number[];
  try { children = listChildren(pid); } catch { return; } // gone: seizing it says so
  for (const child of children) {
    let same = false;
    try { same = kcmp(pid, child, KCMP.VM) === 0; } catch { /* gone meanwhile */ }
    if (same) throw new StasisError(ErrorCodes.UNSUPPORTED, `processes ${pid} and ${child} share their address space (vfork or clone without CLONE_THREAD); not supported yet`);
  }
}

/** Stop signals pending for the thread (its own and its process's) that would stop it, by number. */
function pendingStops(tid: number): number[] {
  let status: Map<string, string>;
  try { status = readStatus(tid); } catch { return []; }
  const mask = (k: string) => BigInt(`0x${status.get(k) ?? '0'}`);
  const blocked = mask('SigBlk');
  const out: number[] = [];
  for (const k of ['SigPnd', 'ShdPnd']) {
    for (const sig of STOP_SIGNALS) {
      const bit = 1n << BigInt(sig - 1);
      // SIGSTOP cannot be blocked; the others only stop when delivered.
      if (mask(k) & bit && (sig === SIG.SIGSTOP || !(blocked & bit))) out.push(sig);
    }
  }
  return out;
}

/**
 * A thread stopped by job control may have more stop signals queued (a
 * second SIGSTOP...). The first remote call would run into them. Let the
 * kernel take each (a signal-delivery stop) and drop it, as CRIU does: a
 * stopped process loses nothing by it (it is stopped already, and SIGCONT
 * would flush them anyway); it is stopped again on release or restore. Only
 * stop signals are pending here, so each resume ends in the next one's stop.
 */
function drainStopSignals(pid: number, tid: number, stopSignal: number): void {
  for (let left = pendingStops(tid).length, i = 0; left > 0; left--, i++) {
    ptrace.cont(tid, 0);
    const r = tryWait4(tid);
    const ws = typeof r === 'number' ? undefined : r;
    if (ws?.kind === 'ptrace-event') { left++; if (i < 64) continue; }
    if (ws?.kind === 'stopped' && STOP_SIGNALS.includes(ws.signal)) continue;
    // Not what was queued: put the stop back as it was and give up.
    tryKill(pid, stopSignal);
    throw new StasisError(ErrorCodes.UNEXPECTED_STOP, `tid ${tid}: ${ws ? describeWait(ws) : 'gone'} while taking its queued stop signals`);
  }
}

function underSeccomp(tid: number): boolean {
  try { return /^Seccomp:\s*[12]$/m.test(fs.readFileSync(`/proc/${tid}/status`, 'utf8')); } catch { return false; }
}

function isZombie(pid: number): boolean {
  try { return readStat(pid).state === 'Z'; } catch { return false; }
}

function tracerOf(pid: number): number {
  try {
    const m = /TracerPid:\s*(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch { return 0; }
}

/**
 * Let the process go on: detach every thread. A process that was stopped by
 * job control stays stopped (the kernel re-instates the group stop on detach).
 */
export function release(p: FrozenProcess): void {
  let first: unknown;
  for (const tid of p.threads) {
    const r = ptrace.tryDetach(tid, 0);
    if (r < 0 && r !== -3 /* ESRCH: gone */ && !first) first = new SyscallError('ptrace', -r, `DETACH ${tid}`);
  }
  if (first) throw first;
}

/**
 * Seize a process and all its descendants, parents before children. A frozen
 * process cannot fork, so its children listed after its freeze are all there
 * will be.
 */
export function freezeTree(root: number, zombies: FoundZombie[] = []): FrozenProcess[] {
  const out: FrozenProcess[] = [];
  try {
    out.push(freezeProcess(root));
    for (let i = 0; i < out.length; i++) {
      for (const child of listChildren(out[i].pid)) {
        if (out.some((p) => p.pid === child) || zombies.some((z) => z.pid === child)) continue;
        let st;
        try { st = readStat(child); } catch { continue; } // gone meanwhile
        // Dead, not yet waited for by its (frozen) parent: what it will find is the exit status.
        const zombie = (s: Stat) => zombies.push({ pid: child, ppid: out[i].pid, exitCode: s.exitCode, comm: s.comm });
        if (st.state === 'Z') { zombie(st); continue; }
        let f: FrozenProcess;
        try { f = freezeProcess(child); } catch (e) {
          // It exited while being seized: a zombie now, or gone (a parent that does not wait).
          if (e instanceof StasisError && (e.code === ErrorCodes.ZOMBIE || e.code === ErrorCodes.TASK_DIED || e.code === ErrorCodes.NO_SUCH_PROCESS)) {
            let now: Stat | undefined;
            try { now = readStat(child); } catch { continue; } // gone
            if (now.state !== 'Z') throw e;
            zombie(now);
            continue;
          }
          throw e;
        }
        f.ppid = out[i].pid;
        out.push(f);
      }
    }
  } catch (e) {
    for (const p of out.reverse()) release(p);
    throw e;
  }
  return out;
}

/** A child of the tree that has exited and is not yet waited for. */
export interface FoundZombie {
  pid: number;
  ppid: number;
  /** As wait(2) would report it (/proc/PID/stat exit_code). */
  exitCode: number;
  comm: string;
}

/**
 * Threads about to be killed: on our CPU, SCHED_IDLE (killFrozen); `put back`
 * returns each to its own CPUs and policy. Put back as soon as our
 * process_mrelease returns, whatever it did: an idle thread pinned beside a
 * busy one of ours could take seconds to exit, and one that does not die (a
 * kill refused) must not keep either. A thread that cannot be pinned is left
 * as it is. Failures only lose the speed-up.
 */
function holdForReaping(tids: readonly number[]): { putBack(): void } {
  const held: { tid: number; cpus: bigint[]; policy: number; priority: number }[] = [];
  const putBack = () => {
    for (const h of held.splice(0)) {
      trySchedSetScheduler(h.tid, h.policy, h.priority);
      try { schedSetAffinity(h.tid, h.cpus); } catch { /* gone: it died */ }
    }
  };
  let cpu: number;
  try { cpu = getcpu(); } catch { return { putBack }; }
  const mask = cpuMask(cpu);
  for (const tid of tids) {
    let was: { cpus: bigint[]; policy: number; priority: number };
    try {
      was = { cpus: schedGetAffinity(tid), ...schedGetScheduler(tid) };
      schedSetAffinity(tid, mask);
    } catch { continue; /* a cpuset without our CPU: the race is the exit's */ }
    held.push({ tid, ...was });
    trySchedSetScheduler(tid, SCHED.IDLE);
  }
  return { putBack };
}

/** process_mrelease answered ENOSYS or EPERM once (an older kernel, a seccomp filter): not tried again. */
let mreleaseMissing = false;

/** Below this much resident memory a killed process frees it itself (killFrozen). */
const MRELEASE_MIN_BYTES = 32 << 20;

/** Kill the dumped process (default after a successful dump, as criu does). */
export function killFrozen(p: FrozenProcess): void {
  // The frozen time runs until the process is reaped (as criu counts it), and
  // a big process spends most of its exit freeing its memory (1 GiB: ~75 ms
  // here). process_mrelease frees it from our side instead (40-50 ms) — but
  // only while the process still holds its memory: woken by the SIGKILL on
  // another core, it drops it (its exit_mm, which then frees it all) within
  // microseconds, before our next call (ESRCH: measured, nearly always). So
  // its threads first move to our core as SCHED_IDLE: woken there they do
  // not preempt us (an idle-policy wakeup never does) and wait for our
  // mrelease (then only an empty address space is left to their exit). The
  // process is dying: nobody sees it run again. Small ones exit fast anyway:
  // the five calls this takes would cost more than they save.
  let pidfd = -1;
  if (!mreleaseMissing && residentPages(p.pid) * abi.PAGE_SIZE >= MRELEASE_MIN_BYTES) try { pidfd = pidfdOpen(p.pid); } catch { /* freed by the exit alone */ }
  const held = pidfd >= 0 ? holdForReaping(p.threads) : undefined;
  const killed = tryKill(p.pid, SIG.SIGKILL) >= 0;
  if (pidfd >= 0) {
    const r = killed ? tryProcessMrelease(pidfd) : -1;
    held!.putBack();
    fs.closeSync(pidfd);
    if (r === -ERRNO.ENOSYS || r === -ERRNO.EPERM) mreleaseMissing = true;
    log.debug(`kill of ${p.pid}: process_mrelease ${r === 0 ? 'freed its memory' : `errno ${-r}`}`);
  }
  // Collect the tracer's exit notifications so the real parent gets its own.
  // Non-leaders first: a dead leader is not reported while its threads are
  // unreaped. Never block for long: the process is dead either way.
  const order = [...p.threads.filter((t) => t !== p.pid), p.pid];
  const deadline = Date.now() + 2000;
  for (const tid of order) {
    while (Date.now() < deadline) {
      const r = tryWait4(tid, WAIT.WNOHANG);
      if (typeof r === 'number' || r.kind === 'exited' || r.kind === 'signaled') break;
      if (r.kind !== 'none') ptrace.tryDetach(tid, 0);
      // Not dead yet: leave the CPU to its exit a moment (on one core we would hold it up).
      else sleepSync(0.2);
    }
  }
}
