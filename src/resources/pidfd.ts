// pidfd (pidfd_open, clone's CLONE_PIDFD): a handle on a process of the
// tree, re-opened with pidfd_open once the tree exists (its pids are the
// dumped ones). A pidfd of a process that has exited and been reaped (fdinfo
// Pid -1) is saved as criu does (nspid -1, the pidfs inode that tells which
// dead process it was): restore starts a process of its own for each such
// inode, opens one pidfd on it for each file, and lets it die and reaps it,
// so the pidfds are of a dead process again, those of one process sharing
// one inode. A pidfd of a process outside the tree is refused, and so are
// thread pidfds (PIDFD_THREAD).
import { abi, pidfdOpen, sysTry } from '../sys';
import { fdinfoField } from '../proc/proc';
import { FD_TYPES, NO_FOWN } from '../images/criu';
import { StasisError, ErrorCodes } from '../errors';
import { defineFileUnit } from '../unit/unit';
import type { RestoreCtx } from '../unit/restore-ctx';
import type { Msg } from '../images/schema';
import { giveFd } from '../compel/give-fd';
import { killAndReap } from '../compel/clone';
import { startStub } from '../restore/stub';
import { filesUnit } from './files';

const { O } = abi;
/** nspid of a pidfd whose process has exited (criu's value). */
const DEAD = -1;

interface RestoreState {
  /** Our pidfd of a dead process for each dead pidfd file entry (by id), made on first need. */
  dead?: Map<number, number>;
}

/**
 * A process of ours for each dead inode, one pidfd on it for each file
 * entry, then its end: every dead pidfd of the checkpoint at once, before
 * any is handed out.
 */
function deadPidfds(ctx: RestoreCtx): Map<number, number> {
  const entries = [...ctx.ckpt.loaded(filesUnit).files.values()].flatMap((f) => (f.pidfd?.nspid === DEAD ? [f.pidfd] : []));
  const byIno = new Map<number, Msg<'pidfd_entry'>[]>();
  for (const e of entries) byIno.set(e.ino, [...(byIno.get(e.ino) ?? []), e]);
  const out = new Map<number, number>();
  try {
    for (const group of byIno.values()) {
      const pid = startStub();
      try {
        for (const e of group) out.set(e.id, pidfdOpen(pid, e.flags & O.NONBLOCK));
      } finally {
        killAndReap(pid);
      }
    }
  } catch (e) {
    for (const fd of out.values()) sysTry('close', fd);
    throw e;
  }
  return out;
}

export const pidfdUnit = defineFileUnit({
  name: 'pidfd',
  restoreState: (): RestoreState => ({}),
  cleanup(_ctx, st) { for (const fd of st.dead?.values() ?? []) sysTry('close', fd); st.dead = undefined; },
  file: {
    type: FD_TYPES.PIDFD,
    field: 'pidfd',
    match: (d) => d.link === 'anon_inode:[pidfd]',
    dump(ctx, d, id) {
      const where = `fd ${d.fd} of pid ${d.pid}`;
      // Pid as our pid namespace sees it; -1 once the process is dead and reaped, 0 outside our namespace.
      const pid = Number(fdinfoField(d.info, 'Pid', where));
      if (d.flags & O.EXCL) throw new StasisError(ErrorCodes.UNSUPPORTED, `${where}: pidfd of a thread (PIDFD_THREAD); not supported`);
      if (pid === DEAD) return { id, ino: Number(BigInt(d.st.ino) & 0xffffffffn), flags: d.flags, nspid: DEAD, fown: NO_FOWN };
      const p = ctx.processes.find((x) => x.pid === pid);
      if (!p) throw new StasisError(ErrorCodes.UNSUPPORTED, `${where}: pidfd of pid ${pid}, outside the dumped tree; not supported`);
      return { id, ino: Number(BigInt(d.st.ino) & 0xffffffffn), flags: d.flags, nspid: p.vpid, fown: NO_FOWN };
    },
    check(e, where) {
      if (e.nspid <= 0 && e.nspid !== DEAD) throw new StasisError(ErrorCodes.BAD_IMAGE, `${where}: pidfd of pid ${e.nspid}`);
    },
    // The pid names a process of the tree (it exists: the tree is made before files).
    open(ctx, tr, e, st: RestoreState) {
      if (e.nspid !== DEAD) return tr.task.callNum('pidfd_open', e.nspid, e.flags & O.NONBLOCK);
      st.dead ??= deadPidfds(ctx);
      return giveFd(tr.task, st.dead.get(e.id)!);
    },
    describe: (e) => (e.nspid === DEAD ? `pidfd of a process that has exited` : `pidfd of pid ${e.nspid}`),
  },
});
