// Zombies of the tree (see dump/zombies.ts): each is forked by its restored
// parent, joins its group or session, and ends at once the way it ended —
// exit_group with its code, or killed by its signal (not dumping core: it is
// made non-dumpable first, as criu does; one that dumped core is refused at
// dump). Its parent's wait then finds it. We trace it (auto-attached at the
// fork), so we see its end first; the kernel then leaves it to its parent.
import { abi, ptrace, wait4, tryKill } from '../sys';
import { RemoteTask, inBuf } from '../compel/remote';
import { cloneChild } from '../compel/clone';
import { StasisError, ErrorCodes } from '../errors';
import type { RestoreCtx, TaskRestore } from '../unit/restore-ctx';
import type { ZombieImage } from '../unit/checkpoint';

const { SYS, PR, KSIGACTION, WSTATUS, WAIT } = abi;

/** After the live tree exists with its groups: every zombie made and dead. */
export function createZombies(ctx: RestoreCtx): void {
  const helpers = new Map<number, { t: RemoteTask; parent: TaskRestore }>();
  try {
    for (const z of ctx.ckpt.zombies) {
      const parent = ctx.tasks.get(z.ppid)!;
      const host = cloneChild(parent.task, z.pid, ctx.ownPidNs);
      const t = RemoteTask.onTrampoline(host, parent.task.trampoline!);
      if (z.sid === z.pid) t.call('setsid');
      else if (z.pgid === z.pid) t.call('setpgid', 0, 0);
      else if (z.pgid !== parent.img.pgid) {
        if (orphanGroup(ctx, z.pgid) && !helpers.has(z.pgid)) helpers.set(z.pgid, groupHelper(ctx, parent, z.pgid));
        t.call('setpgid', 0, z.pgid);
      }
      end(t, z);
    }
    for (const [pgid, h] of helpers) {
      end(h.t, { pid: pgid, ppid: h.parent.img.pid, pgid, sid: h.parent.img.sid, exitCode: 0 });
      // Its parent reaps it: no trace of it is left, its pid is free again.
      h.parent.task.call('wait4', pgid, 0, WAIT.__WALL, 0);
      helpers.delete(pgid);
    }
  } finally {
    for (const h of helpers.values()) tryKill(h.t.pid, abi.SIG.SIGKILL);
  }
}

/** A group no live process of the tree is in, whose leader is gone (dump checked its id is no pid of the tree). */
function orphanGroup(ctx: RestoreCtx, pgid: number): boolean {
  return !ctx.ckpt.processes.some((p) => p.pgid === pgid) && !ctx.ckpt.zombies.some((x) => x.pid === pgid);
}

/**
 * A group whose leader is gone, left with zombies only: a helper child of
 * the zombie's parent takes the leader's id and makes the group, the zombies
 * join it, then the helper ends (no exit signal) and its parent reaps it (criu
 * makes such helpers too). The group lives on in its zombies.
 */
function groupHelper(ctx: RestoreCtx, parent: TaskRestore, pgid: number): { t: RemoteTask; parent: TaskRestore } {
  // No exit signal: its end leaves no SIGCHLD pending in the parent.
  const t = RemoteTask.onTrampoline(cloneChild(parent.task, pgid, ctx.ownPidNs, 0, 0), parent.task.trampoline!);
  t.call('setpgid', 0, 0);
  return { t, parent };
}

function end(t: RemoteTask, z: ZombieImage): void {
  const sig = z.exitCode & WSTATUS.SIG_MASK;
  if (sig) {
    t.call('prctl', PR.SET_DUMPABLE, 0, 0, 0, 0);
    // Its default action (SIGKILL's cannot be changed, nor needs to be).
    if (sig !== abi.SIG.SIGKILL) t.call('rt_sigaction', sig, inBuf(KSIGACTION.encode({ handler: 0n, flags: 0n, restorer: 0n, mask: 0n })), 0, 8);
    ptrace.setSigMask(t.pid, 0n);
    tryKill(t.pid, sig);
    // SIGKILL takes it at once: nothing to continue, only its end to wait for.
    if (sig === abi.SIG.SIGKILL) { awaitEnd(t, z); return; }
  } else {
    const regs = ptrace.getRegs(t.pid);
    ptrace.setRegs(t.pid, { ...regs, rax: BigInt(SYS.exit_group), orig_rax: -1n, rdi: BigInt((z.exitCode >> 8) & 0xff), rip: t.trampoline!.code });
  }
  ptrace.cont(t.pid, 0);
  awaitEnd(t, z);
}

function awaitEnd(t: RemoteTask, z: ZombieImage): void {
  for (;;) {
    const ws = wait4(t.pid);
    if (ws.kind === 'exited' || ws.kind === 'signaled') {
      const got = ws.kind === 'exited' ? ws.code << 8 : ws.signal;
      if (got !== (z.exitCode & ~WSTATUS.CORE_DUMPED)) throw new StasisError(ErrorCodes.RESTORE_FAILED, `zombie ${z.pid} ended with status ${got}, not ${z.exitCode}`);
      return;
    }
    // Its signal, on the way to it (signal-delivery-stop); anything else (exit event): on.
    ptrace.cont(t.pid, ws.kind === 'stopped' ? ws.signal : 0);
  }
}
