// The restored tree as empty shells, parents first: each child is forked by
// its parent (clone3 + set_tid, auto-attached through PTRACE_O_TRACEFORK),
// after the parent has set up its session, so it inherits what it should.
import { abi, ptrace, wait4 } from '../sys';
import { RemoteTask } from '../compel/remote';
import { cloneChild } from '../compel/clone';
import type { RestoreCtx, TaskRestore } from '../unit/restore-ctx';
import { memoryUnit, premapForChildren, adoptInherited } from '../resources/memory';
import { moveVdso } from './stub';
import { createZombies } from './zombies';
import { ttyAfterSetsid } from '../resources/tty';

const { ALL_SIGNALS, CLONE } = abi;

export function createTree(ctx: RestoreCtx, root: TaskRestore): void {
  const procs = ctx.ckpt.processes;
  const mm = ctx.loaded(memoryUnit);
  const reprotect = ctx.state(memoryUnit);
  const make = (tr: TaskRestore) => {
    if (tr.img.sid === tr.img.pid) tr.task.call('setsid');
    // Before its children exist: they inherit its controlling terminal.
    ttyAfterSetsid(ctx, tr);
    const children = procs.filter((x) => x.ppid === tr.img.pid && x !== procs[0]);
    // Private memory the children share copy-on-write is in the parent before they are forked.
    premapForChildren(ctx, tr, children, mm, reprotect);
    for (const child of children) {
      // A child sharing its parent's fd table (clone(CLONE_FILES)) is made so: its fds are the parent's.
      const host = cloneChild(tr.task, child.pid, ctx.ownPidNs, child.ids.files_id === tr.img.ids.files_id ? CLONE.FILES : 0);
      ptrace.setSigMask(host, ALL_SIGNALS);
      const t = RemoteTask.onTrampoline(host, tr.task.trampoline!);
      const ctr: TaskRestore = { img: child, task: t, threads: new Map([[child.pid, t]]), xsaveSize: root.xsaveSize };
      ctx.tasks.set(child.pid, ctr);
      // Before its vdso moves: what it inherited but does not have may lie there.
      adoptInherited(ctx, tr, ctr, mm, reprotect);
      // A child that exec'd elsewhere had its vdso elsewhere.
      moveVdso(t, mm.get(child.pid)!.mm.vmas ?? []);
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
  createZombies(ctx);
}

/** Wait for the restored process as its parent (stasis restore without -d). */
export function waitRestored(pid: number): { code?: number; signal?: number } {
  for (;;) {
    const ws = wait4(pid);
    if (ws.kind === 'exited') return { code: ws.code };
    if (ws.kind === 'signaled') return { signal: ws.signal };
  }
}
