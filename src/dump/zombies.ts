// Zombies: children of the tree that have exited and that their (frozen)
// parents have not waited for yet. A shell loop's `sleep` is one whenever the
// freeze comes between its exit and the shell's wait. As criu: a pstree entry
// whose core says TASK_DEAD with the wait status; nothing else exists of it.
// Restore re-creates each as a child of its parent that exits at once the way
// it did (src/restore/zombies.ts), so the parent's wait finds what it would have.
import { abi } from '../sys';
import { StasisError, ErrorCodes } from '../errors';
import { readStatus, innermostId } from '../proc/proc';
import { parts } from '../images/image';
import { MARCH, TASK_STATE } from '../images/criu';
import type { FoundZombie } from '../freeze';
import type { DumpCtx, ProcessDump, ZombieDump } from '../unit/dump-ctx';

/**
 * Their ids as the tree sees them; a zombie that leads a group or session
 * others are in, or dumped core, is refused, and so is one in a group with no
 * live member whose id is a pid of the tree (a group whose leader is gone is
 * made again at restore by a helper process with its id).
 */
export function inspectZombies(found: readonly FoundZombie[], pds: readonly ProcessDump[]): ZombieDump[] {
  const zs = found.map((z): ZombieDump => {
    const status = readStatus(z.pid);
    return { pid: z.pid, ppid: z.ppid, vpid: innermostId(status, 'NSpid'), vpgid: innermostId(status, 'NSpgid'), vsid: innermostId(status, 'NSsid'), exitCode: z.exitCode, comm: z.comm };
  });
  for (const z of zs) {
    const parent = pds.find((p) => p.pid === z.ppid)!;
    const member = pds.find((p) => p.vpgid === z.vpid || p.vsid === z.vpid);
    // Only a real core dump sets it: stasis would have to write one again, where the task's cwd and core_pattern say.
    if (z.exitCode & abi.WSTATUS.CORE_DUMPED) throw new StasisError(ErrorCodes.ZOMBIE, `pid ${z.pid} (${z.comm}), a zombie, dumped core as it ended (the core-dumped bit of its wait status, which stasis does not make again); not supported`);
    if (member) throw new StasisError(ErrorCodes.ZOMBIE, `pid ${z.pid} (${z.comm}) is a zombie that still leads the ${member.vsid === z.vpid ? 'session' : 'process group'} of pid ${member.pid}; not supported`);
    if (z.vsid !== parent.vsid && z.vsid !== z.vpid) throw new StasisError(ErrorCodes.ZOMBIE, `pid ${z.pid} (${z.comm}), a zombie, is in session ${z.vsid}, neither its own nor its parent's; not supported`);
    // A group with no live member is made again by a helper with its id (restore/zombies.ts): that id must be free.
    const holder = pds.find((p) => p.vpid === z.vpgid) ?? zs.find((x) => x.vpid === z.vpgid && x !== z);
    if (z.vpgid !== z.vpid && !pds.some((p) => p.vpgid === z.vpgid) && holder) throw new StasisError(ErrorCodes.ZOMBIE, `pid ${z.pid} (${z.comm}), a zombie, is in process group ${z.vpgid}, which has no live member in the tree, and whose id is pid ${holder.pid} of the tree; not supported`);
  }
  return zs;
}

/** pstree entries (after every live process: parents come first) and core-VPID.img of each zombie. */
export function zombieEntries(ctx: DumpCtx, vpidOf: ReadonlyMap<number, number>): { pid: number; ppid: number; pgid: number; sid: number; threads: number[] }[] {
  return ctx.zombies.map((z) => {
    ctx.write(`core-${z.vpid}.img`, 'CORE', parts('core_entry', [{
      mtype: MARCH.X86_64,
      tc: { task_state: TASK_STATE.DEAD, exit_code: z.exitCode, personality: 0, flags: 0, blk_sigset: 0n, comm: z.comm },
    }]));
    return { pid: z.vpid, ppid: vpidOf.get(z.ppid)!, pgid: z.vpgid, sid: z.vsid, threads: [z.vpid] };
  });
}
