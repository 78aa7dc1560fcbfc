// `stasis restore`: rebuild a dumped process from its images.
//
// A stub is stripped to a trampoline and cloned into the task's old PID
// (stub.ts); then the restore phases below run in the new task through remote
// syscalls; last, the trampoline goes, registers are set and the task is let go.
import * as fs from 'node:fs';
import { abi, ptrace, wait4, tryKill } from '../sys';
import { StasisError, ErrorCodes, injectFailure } from '../errors';
import { loadCheckpoint, type Checkpoint } from './load';
import { VMA } from '../resources/memory';
import type { RestoreCtx, RestoreOptions, TaskRestore } from './context';
import { RemoteTask, TRAMPOLINE_PAGES } from './remote';
import { startStub, prepareStub, cloneTask, cloneThread, cloneChild, moveVdso, killAndReap } from './stub';
import { restoreAddressSpace, restorePages, restoreProtections, restoreAdvice, restoreMm } from '../resources/memory';
import { restoreFiles, closeParked, closeInherited } from '../resources/files';
import { restoreFs } from '../resources/fs';
import { restoreSigactions, restoreLateSigaction, restorePending } from '../resources/signals';
import { restoreItimers } from '../resources/timers';
import { restoreRlimits } from '../resources/rlimits';
import { restoreTaskAttrs, restoreThreadState, restoreRegisters, TASK_STATE } from '../resources/core';

const { SIG, PTRACE_O, PAGE_SIZE } = abi;

interface Phase {
  name: string;
  /** Phases that must have run before this one, and why. */
  after: string[];
  run: (ctx: RestoreCtx, tr: TaskRestore) => void;
}

/**
 * The restore phases of one process. Order comes from `after`, not from
 * this list's order; restorePhaseOrder() checks it is a valid order.
 */
export const PHASES: Phase[] = [
  // Before any fd of ours exists in the task (memfd mappings open some).
  { name: 'close-inherited', after: [], run: closeInherited },
  { name: 'address-space', after: ['close-inherited'], run: restoreAddressSpace },
  { name: 'pages', after: ['address-space'], run: restorePages },
  // Writable-for-filling VMAs go back to their protection once filled.
  { name: 'protections', after: ['pages'], run: restoreProtections },
  // Advice such as DONTFORK or HUGEPAGE may split VMAs: on the final ones; mlock once pages are in.
  { name: 'advice', after: ['pages', 'protections'], run: restoreAdvice },
  // PR_SET_MM_MAP checks its addresses against existing VMAs.
  { name: 'mm', after: ['address-space'], run: restoreMm },
  { name: 'fs', after: [], run: restoreFs },
  // close_range() in files must not close fds the mapping phases still use;
  // paths open relative to the restored cwd/root.
  { name: 'files', after: ['address-space', 'mm', 'fs'], run: restoreFiles },
  // Pipe ends parked in their creator can go once every process has its fds
  // (phases run in lock-step: each phase for every process before the next).
  { name: 'files-cleanup', after: ['files'], run: closeParked },
  { name: 'task-attrs', after: [], run: restoreTaskAttrs },
  // A lowered RLIMIT_NOFILE must not stop files from reaching their numbers.
  { name: 'rlimits', after: ['files'], run: restoreRlimits },
  { name: 'sigactions', after: [], run: restoreSigactions },
  // rseq, robust list, clear_tid and altstack point into restored memory.
  { name: 'thread-state', after: ['pages', 'protections'], run: (_c, tr) => restoreThreadState(tr.task, tr.img.threads[0].core) },
  // Threads share the rebuilt mm, files and fs: create them once those are
  // whole. Each gets its own clear_tid, robust list, altstack and rseq.
  { name: 'threads', after: ['pages', 'protections', 'mm', 'files', 'fs', 'sigactions'], run: (_c, tr) => {
    for (const th of tr.img.threads.slice(1)) {
      cloneThread(tr.task, th.tid);
      const t = new RemoteTask(th.tid, tr.task.trampoline);
      tr.threads.set(th.tid, t);
      restoreThreadState(t, th.core);
    }
  } },
  // Timers start ticking when set: as late as possible.
  { name: 'itimers', after: ['address-space', 'pages', 'protections', 'advice', 'mm', 'fs', 'files', 'files-cleanup', 'task-attrs', 'rlimits', 'sigactions', 'thread-state', 'threads'], run: restoreItimers },
  // Every signal is blocked in the task until its own mask is set at the end.
  { name: 'pending-signals', after: ['sigactions', 'itimers', 'threads'], run: (_c, tr) => {
    const leader = tr.img.threads[0].core;
    restorePending(tr.task, tr.img.pid, tr.img.pid, leader.tc.signals_s, true);
    for (const th of tr.img.threads) restorePending(tr.task, tr.img.pid, th.tid, th.core.thread_core?.signals_p, false);
  } },
];

/** Topological order of PHASES (declaration order among equals); throws on cycles or unknown names. */
export function restorePhaseOrder(phases: Phase[] = PHASES): Phase[] {
  const byName = new Map(phases.map((p) => [p.name, p]));
  for (const p of phases) for (const a of p.after) if (!byName.has(a)) throw new Error(`restore phase ${p.name} after unknown ${a}`);
  const done = new Set<string>();
  const out: Phase[] = [];
  while (out.length < phases.length) {
    const next = phases.find((p) => !done.has(p.name) && p.after.every((a) => done.has(a)));
    if (!next) throw new Error('restore phases have a cycle');
    done.add(next.name);
    out.push(next);
  }
  return out;
}

export interface RestoreResult { pid: number; processes: number; ms: number; warnings: string[] }

const ALL_SIGNALS = 0xffffffffffffffffn;

function step(ctx: RestoreCtx, name: string): void {
  injectFailure(ctx.opts.failAt, name, 'restore phase');
}

/** A `syscall` instruction in the task's [vdso], for the calls that outlive the trampoline. */
function findSyscallInsn(pid: number, vmas: { start: bigint; end: bigint; status: number }[]): bigint {
  const v = vmas.find((x) => x.status & VMA.AREA_VDSO);
  if (v) {
    const len = Number(v.end - v.start);
    const b = Buffer.alloc(len);
    const fd = fs.openSync(`/proc/${pid}/mem`, 'r');
    try { fs.readSync(fd, b, 0, len, Number(v.start)); } finally { fs.closeSync(fd); }
    for (let i = 0; i + 1 < len; i++) if (b[i] === 0x0f && b[i + 1] === 0x05) return v.start + BigInt(i);
  }
  throw new StasisError(ErrorCodes.RESTORE_FAILED, `no syscall instruction in the [vdso] of task ${pid}`);
}

function finish(ctx: RestoreCtx, tr: TaskRestore): void {
  const pid = tr.img.pid;
  for (const t of tr.threads.values()) t.p.cure();
  // The trampoline cannot unmap itself and then trap: run the last calls on
  // the vdso's own `syscall` with syscall-exit stops (no int3, no signal).
  const insn = findSyscallInsn(pid, tr.img.mm.vmas);
  const last = new RemoteTask(pid, tr.task.trampoline, { codeAddr: insn, mode: 'syscall-stop', existingSyscall: true, extraOptions: PTRACE_O.EXITKILL });
  try {
    restoreLateSigaction(tr, last);
    last.call('munmap', tr.task.trampoline, TRAMPOLINE_PAGES * PAGE_SIZE);
  } finally {
    last.p.cure();
  }
  step(ctx, 'registers');
  for (const th of tr.img.threads) restoreRegisters(th.tid, th.core, tr.xsaveSize);
  if (tr.img.threads[0].core.tc.task_state === TASK_STATE.STOPPED) tryKill(pid, SIG.SIGSTOP);
  step(ctx, 'detach');
  for (const th of tr.img.threads) ptrace.detach(th.tid, 0);
}

/**
 * Create the tree as empty shells, parents first: each child is forked by
 * its parent (clone3 + set_tid, auto-attached through PTRACE_O_TRACEFORK),
 * after the parent has set up its session, so it inherits what it should.
 */
function createTree(ctx: RestoreCtx, root: TaskRestore, tramp: bigint): void {
  const procs = ctx.ckpt.processes;
  const make = (tr: TaskRestore) => {
    if (tr.img.sid === tr.img.pid) tr.task.call('setsid');
    for (const child of procs.filter((x) => x.ppid === tr.img.pid && x !== procs[0])) {
      cloneChild(tr.task, child.pid);
      ptrace.setSigMask(child.pid, ALL_SIGNALS);
      const t = new RemoteTask(child.pid, tramp);
      const ctr: TaskRestore = { img: child, task: t, threads: new Map([[child.pid, t]]), xsaveSize: root.xsaveSize, reprotect: [] };
      ctx.tasks.set(child.pid, ctr);
      // A child that exec'd elsewhere had its vdso elsewhere.
      moveVdso(t, child.mm.vmas);
      make(ctr);
    }
  };
  make(root);
  // Process groups, leaders first (a group must exist before others join it).
  const all = [...ctx.tasks.values()];
  const leadersFirst = [...all.filter((t) => t.img.pgid === t.img.pid), ...all.filter((t) => t.img.pgid !== t.img.pid)];
  for (const tr of leadersFirst) {
    if (tr.img.sid === tr.img.pid) continue; // a session leader already leads its group
    if (!ctx.tasks.has(tr.img.pgid)) continue; // group from outside the tree: inherited
    tr.task.call('setpgid', 0, tr.img.pgid);
  }
}

function killAll(ctx: RestoreCtx, extra: number[]): void {
  const tasks = [...ctx.tasks.values()].reverse();
  for (const tr of tasks) tryKill(tr.img.pid, SIG.SIGKILL);
  for (const tr of tasks) killAndReap(tr.img.pid, [...tr.threads.keys()]);
  for (const pid of extra) killAndReap(pid);
}

export function restore(opts: RestoreOptions): RestoreResult {
  const t0 = process.hrtime.bigint();
  const ckpt: Checkpoint = loadCheckpoint(opts.dir, { skipFileCheck: opts.skipFileCheck, shellJob: opts.shellJob });
  for (const proc of ckpt.processes) {
    for (const th of proc.threads) {
      if (fs.existsSync(`/proc/${th.tid}`)) throw new StasisError(ErrorCodes.PID_TAKEN, `pid ${th.tid} is already in use; cannot restore ${th.tid === proc.pid ? `process ${proc.pid}` : `thread ${th.tid} of ${proc.pid}`}`);
    }
  }
  const ctx: RestoreCtx = { opts, ckpt, tasks: new Map(), fileHolders: new Map(), pipes: new Map(), sockPairs: new Map(), ghostFiles: new Map(), memfds: new Map(), fifoKeepers: new Map(), parked: [], warnings: [] };
  const order = restorePhaseOrder();
  const rootImg = ckpt.processes[0];

  const stub = startStub();
  try {
    step(ctx, 'stub');
    // The trampoline must be free in every process's layout: children inherit it.
    const tramp = prepareStub(stub, ckpt.processes.flatMap((x) => x.mm.vmas), rootImg.mm.vmas);
    const stubTask = new RemoteTask(stub, tramp);
    step(ctx, 'clone');
    const rootPid = cloneTask(stubTask, rootImg.pid);
    killAndReap(stub);
    // Nothing may be delivered to a task before its own mask is set.
    ptrace.setSigMask(rootPid, ALL_SIGNALS);
    const leader = new RemoteTask(rootPid, tramp);
    const root: TaskRestore = { img: rootImg, task: leader, threads: new Map([[rootPid, leader]]), xsaveSize: ptrace.getXstate(rootPid).length, reprotect: [] };
    ctx.tasks.set(rootPid, root);
    step(ctx, 'tree');
    createTree(ctx, root, tramp);
    for (const phase of order) {
      step(ctx, phase.name);
      for (const tr of ctx.tasks.values()) {
        try {
          phase.run(ctx, tr);
        } catch (e) {
          if (e instanceof StasisError) throw new StasisError(e.code, `restore phase ${phase.name} of pid ${tr.img.pid}: ${e.message}`, { cause: e });
          throw e;
        }
      }
    }
    // Children first: a parent let go first could act on (or wait for) a child not yet finished.
    for (const tr of [...ctx.tasks.values()].reverse()) finish(ctx, tr);
  } catch (e) {
    killAll(ctx, [stub]);
    throw e;
  } finally {
    // Re-created deleted files are deleted again, success or not.
    for (const p of ctx.ghostFiles.values()) fs.rmSync(p, { force: true });
  }
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  return { pid: rootImg.pid, processes: ckpt.processes.length, ms, warnings: ctx.warnings };
}

/** Wait for the restored process as its parent (stasis restore without -d). */
export function waitRestored(pid: number): { code?: number; signal?: number } {
  for (;;) {
    const ws = wait4(pid);
    if (ws.kind === 'exited') return { code: ws.code };
    if (ws.kind === 'signaled') return { signal: ws.signal };
  }
}
