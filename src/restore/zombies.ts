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
import type { RestoreCtx } from '../unit/restore-ctx';
import type { ZombieImage } from '../unit/checkpoint';

const { SYS, PR, KSIGACTION, WSTATUS } = abi;

/** After the live tree exists with its groups: every zombie made and dead. */
export function createZombies(ctx: RestoreCtx): void {
  for (const z of ctx.ckpt.zombies) {
    const parent = ctx.tasks.get(z.ppid)!;
    const host = cloneChild(parent.task, z.pid, ctx.ownPidNs);
    const t = RemoteTask.onTrampoline(host, parent.task.trampoline!);
    if (z.sid === z.pid) t.call('setsid');
    else if (z.pgid === z.pid) t.call('setpgid', 0, 0);
    else if (z.pgid !== parent.img.pgid) t.call('setpgid', 0, z.pgid);
    end(t, z);
  }
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
