// `stasis restore`: rebuild a dumped tree from its images.
//
// A stub is stripped to a trampoline and cloned into the root's old PID
// (stub.ts); the root forks the rest of the tree (tree.ts); then the units'
// restore phases run in every new task through remote syscalls, in declared
// order and in lock-step (each phase for every process before the next);
// last, the trampoline goes, registers are set and the tree is let go.
import * as fs from 'node:fs';
import { abi, ptrace, tryKill } from '../sys';
import { StasisError, ErrorCodes } from '../errors';
import { readStat, readStatus } from '../proc/proc';
import { RemoteTask, TRAMPOLINE_PAGES } from '../compel/remote';
import { clone, killAndReap } from '../compel/clone';
import { VMA, TASK_STATE } from '../images/criu';
import { lockForReading } from '../images/dir';
import { verifyImages } from '../images/digest';
import { order } from '../unit/order';
import { RestoreCtx, type RestoreOptions, type TaskRestore } from '../unit/restore-ctx';
import type { AnyUnit, RestorePhase } from '../unit/unit';
import type { Msg } from '../images/schema';
import { UNITS } from '../resources/registry';
import { memoryUnit } from '../resources/memory';
import { namespacesUnit } from '../resources/ns/namespaces';
import { restoreLateSigaction } from '../resources/signals';
import { restoreRegisters } from '../resources/core';
import { restoreDumpableLast } from '../resources/creds';
import { loadCheckpoint, validateCheckpoint } from './load';
import { startStub, prepareStub } from './stub';
import { createTree } from './tree';
import { timed, ordered } from '../log';
import { remoteCalls } from '../compel/parasite';
import { armLazy } from '../resources/memory/lazy';
import { LazyServer } from './lazy-server';

const { SIG, PTRACE_O, PAGE_SIZE, ALL_SIGNALS, SYSCALL_INSN, CLONE } = abi;

export type { RestoreOptions };

interface BoundPhase extends RestorePhase<unknown, unknown> { unit: AnyUnit }

const STAGES = ['stub', 'root', 'tree'] as const;

/** The restore phases of every unit, by stage, each stage in the order its declarations give. */
export function restorePhases(units: readonly AnyUnit[] = UNITS): Record<(typeof STAGES)[number], BoundPhase[]> {
  const all: BoundPhase[] = units.flatMap((u) => (u.restorePhases ?? []).map((p) => ({ ...(p as RestorePhase<unknown, unknown>), unit: u })));
  // afterAll (tree stage): after every phase of the tree that does not say it too.
  const others = all.filter((p) => (p.stage ?? 'tree') === 'tree' && !p.afterAll).map((p) => p.name);
  const placed = all.map((p) => (p.afterAll ? { ...p, after: [...(p.after ?? []), ...others] } : p));
  const by = (stage: string) => placed.filter((p) => (p.stage ?? 'tree') === stage);
  return { stub: order(by('stub'), 'stub phases'), root: order(by('root'), 'root phases'), tree: order(by('tree'), 'restore phases') };
}

/** Failure-injection points of a restore, in the order they are reached. */
export function restoreSteps(): string[] {
  const p = restorePhases();
  const names = (xs: BoundPhase[]) => xs.map((x) => x.name);
  return ['stub', ...names(p.stub), 'clone', ...names(p.root), 'tree', ...names(p.tree), 'registers', 'detach'];
}

export interface RestoreResult {
  /** The restored root, as we see it (in a pid namespace of its own it has another id there). */
  pid: number;
  /** Every restored process as we see it, parents first. */
  pids: number[];
  processes: number;
  ms: number;
  warnings: string[];
  /** Milliseconds spent in each step, by name, in the order run (they add up to at most `ms`). */
  timings: Record<string, number>;
  /** Remote system calls run in the stub and the new tasks, and the stops they took (a batch runs several in one). */
  remoteCalls: number;
  remoteStops: number;
  /** --lazy-pages: the pages still to copy, served by `lazy.serve()` (the tree runs meanwhile). */
  lazy?: LazyServer;
}

/**
 * A `syscall` instruction for the calls that outlive the trampoline: in the
 * task's [vdso], or (a task that unmapped it) in any other executable mapping
 * (the bytes need not start an instruction of the program: we run only them).
 */
function findSyscallInsn(pid: number, vmas: Msg<'vma_entry'>[]): bigint {
  const vdso = vmas.filter((x) => x.status & VMA.AREA_VDSO);
  // File mappings only: anonymous pages may still be on their way (lazy restore), and a read would wait on them.
  const exec = vmas.filter((x) => (x.status & (VMA.FILE_PRIVATE | VMA.FILE_SHARED)) && (x.prot & abi.PROT.EXEC) && (x.prot & abi.PROT.READ));
  const fd = fs.openSync(`/proc/${pid}/mem`, 'r');
  try {
    const chunk = Buffer.alloc(1 << 20);
    for (const v of [...vdso, ...exec]) {
      // Chunks overlap by a byte, so an instruction across a boundary is found.
      for (let at = v.start; at < v.end - 1n; at += BigInt(chunk.length - 1)) {
        const len = Number(v.end - at < BigInt(chunk.length) ? v.end - at : BigInt(chunk.length));
        let n: number;
        try { n = fs.readSync(fd, chunk, 0, len, Number(at)); } catch { break; } // not readable from here
        const i = chunk.subarray(0, n).indexOf(SYSCALL_INSN);
        if (i >= 0) return at + BigInt(i);
        if (n < len) break;
      }
    }
  } finally {
    fs.closeSync(fd);
  }
  throw new StasisError(ErrorCodes.RESTORE_FAILED, `no syscall instruction in the [vdso] or any executable mapping of task ${pid}`);
}

function finish(ctx: RestoreCtx, tr: TaskRestore, keepTraced: boolean): void {
  const pid = tr.task.pid;
  for (const t of tr.threads.values()) t.cure();
  // The trampoline cannot unmap itself and then trap: run the last calls on
  // the vdso's own `syscall` with syscall-exit stops (no int3, no signal).
  const insn = findSyscallInsn(pid, ctx.loaded(memoryUnit).get(tr.img.pid)!.mm.vmas ?? []);
  const last = RemoteTask.prepare(pid, 0n, 0, { codeAddr: insn, mode: 'syscall-stop', existingSyscall: true, extraOptions: PTRACE_O.EXITKILL });
  try {
    restoreLateSigaction(tr, last);
    last.call('munmap', tr.task.trampoline!.code, TRAMPOLINE_PAGES * PAGE_SIZE);
    restoreDumpableLast(ctx, tr, last);
  } finally {
    last.cure();
  }
  ctx.step('registers');
  const ours = (vtid: number) => tr.threads.get(vtid)!.pid;
  for (const th of tr.img.threads) restoreRegisters(ours(th.tid), th.core, tr.xsaveSize);
  if (tr.img.threads[0].core.tc?.task_state === TASK_STATE.STOPPED) tryKill(pid, stopSignal(pid, tr.img.threads[0].core.tc.stop_signo));
  ctx.step('detach');
  for (const th of tr.img.threads) {
    const tid = ours(th.tid);
    if (keepTraced && th.tid === tr.img.pid) {
      // Lazy pages: the leader stays ours until its pages are in, so that our death kills it (lazy-server.ts).
      ptrace.setOptions(tid, PTRACE_O.EXITKILL);
      ptrace.cont(tid, 0);
    } else {
      ptrace.detach(tid, 0);
    }
  }
}

/**
 * The signal to stop a restored process with: the one that stopped it (its
 * parent's waitid reports it) when that one stops it now, else SIGSTOP,
 * which always does. SIGTSTP, SIGTTIN and SIGTTOU do nothing blocked, caught
 * or ignored, and are dropped in a process group that looks orphaned (its
 * parents' groups are checked up the chain, not its other members').
 */
function stopSignal(pid: number, sig: number | undefined): number {
  if (!sig || sig === SIG.SIGSTOP || sig < 1 || sig > 64) return SIG.SIGSTOP;
  const status = readStatus(pid);
  const bit = 1n << BigInt(sig - 1);
  for (const k of ['SigBlk', 'SigIgn', 'SigCgt']) if (BigInt(`0x${status.get(k) ?? '0'}`) & bit) return SIG.SIGSTOP;
  const me = readStat(pid);
  for (let p = me.ppid, hops = 0; p > 0 && hops < 64; hops++) {
    let up;
    try { up = readStat(p); } catch { break; }
    if (up.pgrp !== me.pgrp) return up.session === me.session ? sig : SIG.SIGSTOP;
    p = up.ppid;
  }
  return SIG.SIGSTOP;
}

function killAll(ctx: RestoreCtx, extra: number[]): void {
  const tasks = [...ctx.tasks.values()].reverse();
  for (const tr of tasks) tryKill(tr.task.pid, SIG.SIGKILL);
  for (const tr of tasks) killAndReap(tr.task.pid, [...tr.threads.values()].map((t) => t.pid));
  for (const pid of extra) killAndReap(pid);
}

function runPhase(ctx: RestoreCtx, p: BoundPhase): void {
  const l = ctx.loaded(p.unit);
  const st = ctx.state(p.unit);
  let cur: TaskRestore | undefined;
  try {
    if (p.each) for (cur of ctx.tasks.values()) p.each(ctx, cur, l, st);
    cur = undefined;
    p.once?.(ctx, l, st);
  } catch (e) {
    if (e instanceof StasisError && e.code !== ErrorCodes.INJECTED_FAILURE) {
      throw new StasisError(e.code, `restore phase ${p.name}${cur ? ` of pid ${cur.img.pid}` : ''}: ${e.message}`, { cause: e });
    }
    throw e;
  }
}

function cleanup(ctx: RestoreCtx, ok: boolean): void {
  for (const u of UNITS) if (u.cleanup && ctx.touched().includes(u)) {
    try { u.cleanup(ctx, ctx.state(u), ok); } catch (e) { if (ok) throw e; }
  }
}

export function restore(opts: RestoreOptions): RestoreResult {
  const t0 = process.hrtime.bigint();
  const calls0 = remoteCalls.count, stops0 = remoteCalls.stops;
  const lock = lockForReading(opts.dir);
  try {
    const timings: Record<string, number> = {};
    // Every file against the digest before anything is read for real (--no-verify: not);
    // lazily, the pages files' chunks as they are read (DeferredChunks), before any reaches a task.
    const listing = opts.verify === false ? undefined : timed(timings, 'verify', () => verifyImages(opts.dir, opts.anyOwner, opts.lazyPages));
    const ckpt = timed(timings, 'load', () => loadCheckpoint(opts.dir, { ...opts, listing }, UNITS, timings));
    timed(timings, 'validate', () => validateCheckpoint(ckpt, UNITS, timings));
    // In a pid namespace of its own, the tree's ids are free by construction.
    if (!ckpt.loaded(namespacesUnit).has('pid')) {
      const wanted = [
        ...ckpt.processes.flatMap((p) => p.threads.map((th) => ({ id: th.tid, what: th.tid === p.pid ? `process ${p.pid}` : `thread ${th.tid} of ${p.pid}` }))),
        ...ckpt.zombies.map((z) => ({ id: z.pid, what: `zombie ${z.pid}` })),
      ];
      for (const w of wanted) if (fs.existsSync(`/proc/${w.id}`)) throw new StasisError(ErrorCodes.PID_TAKEN, `pid ${w.id} is already in use; cannot restore ${w.what}`);
    }
    const rootImg = ckpt.processes[0];
    // CLONE_PARENT: the root is our child (not the stub's), so we can wait for it as criu does.
    const ctx = new RestoreCtx(opts, ckpt, { flags: CLONE.PARENT, setTid: [rootImg.pid] });
    const phases = restorePhases();
    const mm = ckpt.loaded(memoryUnit);
    opts.notify?.('pre-restore');
    const stub = timed(timings, 'stub', () => startStub());
    let ok = false;
    let lazy: LazyServer | undefined;
    const run = (p: BoundPhase) => { ctx.step(p.name); timed(timings, p.name, () => runPhase(ctx, p)); };
    try {
      ctx.step('stub');
      // The trampoline must be free in every process's layout: children inherit it.
      ctx.stub = timed(timings, 'stub-prepare', () => prepareStub(stub, [...mm.values()].flatMap((m) => m.mm.vmas ?? []), mm.get(rootImg.pid)!.mm.vmas ?? []));
      phases.stub.forEach(run);
      ctx.step('clone');
      // Cloned from the stub, the root's id as we see it is what clone3 returns.
      const rootPid = timed(timings, 'clone', () => clone(ctx.stub!, ctx.rootClone));
      const trampoline = ctx.stub.trampoline!;
      killAndReap(stub);
      ctx.stub = undefined;
      // Nothing may be delivered to a task before its own mask is set.
      ptrace.setSigMask(rootPid, ALL_SIGNALS);
      const leader = RemoteTask.onTrampoline(rootPid, trampoline);
      const root: TaskRestore = { img: rootImg, task: leader, threads: new Map([[rootImg.pid, leader]]), xsaveSize: ptrace.getXstate(rootPid).length };
      ctx.tasks.set(rootImg.pid, root);
      opts.notify?.('setup-namespaces', rootPid);
      phases.root.forEach(run);
      opts.notify?.('post-setup-namespaces');
      ctx.step('tree');
      timed(timings, 'tree', () => createTree(ctx, root));
      phases.tree.forEach(run);
      // Everything is in place, nothing runs yet.
      opts.notify?.('post-restore', rootPid);
      opts.notify?.('network-unlock');
      opts.notify?.('pre-resume');
      // Lazy pages: registered last, when no remote call of ours can fault on them any more.
      if (opts.lazyPages) lazy = new LazyServer(timed(timings, 'lazy-arm', () => armLazy(ctx, mm)), root.task.pid);
      const keep = new Set(lazy?.tracedPids ?? []);
      // Children first: a parent let go first could act on (or wait for) a child not yet finished.
      timed(timings, 'finish', () => { for (const tr of [...ctx.tasks.values()].reverse()) finish(ctx, tr, keep.has(tr.task.pid)); });
      ok = true;
    } catch (e) {
      killAll(ctx, [stub]);
      lazy?.abandon();
      throw e;
    } finally {
      cleanup(ctx, ok);
    }
    // The tree runs: too late to undo (criu only logs a failure here).
    try { opts.notify?.('post-resume'); } catch (e) { ctx.warnings.push(`post-resume: ${(e as Error).message}`); }
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    // Our ids (the outer ones when the tree has a pid namespace of its own).
    const pids = ckpt.processes.map((p) => ctx.tasks.get(p.pid)!.task.pid);
    return { pid: pids[0], pids, processes: ckpt.processes.length, ms, warnings: ctx.warnings, timings: ordered(timings), remoteCalls: remoteCalls.count - calls0, remoteStops: remoteCalls.stops - stops0, lazy };
  } finally {
    lock.close();
  }
}
