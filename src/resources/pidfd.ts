// pidfd (pidfd_open, clone's CLONE_PIDFD): a handle on a process of the
// tree, re-opened with pidfd_open once the tree exists (its pids are the
// dumped ones). A pidfd of a process that has exited (its pid reaped) or of
// one outside the tree would name another process, or none, after restore:
// refused. Thread pidfds (PIDFD_THREAD) likewise.
import { abi } from '../sys';
import { fdinfoField } from '../proc/proc';
import { FD_TYPES, NO_FOWN } from '../images/criu';
import { StasisError, ErrorCodes } from '../errors';
import { defineFileUnit } from '../unit/unit';

const { O } = abi;

export const pidfdUnit = defineFileUnit({
  name: 'pidfd',
  file: {
    type: FD_TYPES.PIDFD,
    field: 'pidfd',
    match: (d) => d.link === 'anon_inode:[pidfd]',
    dump(ctx, d, id) {
      const where = `fd ${d.fd} of pid ${d.pid}`;
      // Pid as our pid namespace sees it; -1 once the process is dead and reaped.
      const pid = Number(fdinfoField(d.info, 'Pid', where));
      if (pid <= 0) throw new StasisError(ErrorCodes.UNSUPPORTED, `${where}: pidfd of a process that has exited; not supported`);
      if (d.flags & O.EXCL) throw new StasisError(ErrorCodes.UNSUPPORTED, `${where}: pidfd of a thread (PIDFD_THREAD); not supported`);
      const p = ctx.processes.find((x) => x.pid === pid);
      if (!p) throw new StasisError(ErrorCodes.UNSUPPORTED, `${where}: pidfd of pid ${pid}, outside the dumped tree; not supported`);
      return { id, ino: d.st.ino, flags: d.flags, nspid: p.vpid, fown: NO_FOWN };
    },
    check(e, where) {
      if (e.nspid <= 0) throw new StasisError(ErrorCodes.BAD_IMAGE, `${where}: pidfd of pid ${e.nspid}`);
    },
    // The pid names a process of the tree (it exists: the tree is made before files).
    open: (_ctx, tr, e) => tr.task.callNum('pidfd_open', e.nspid, e.flags & O.NONBLOCK),
    describe: (e) => `pidfd of pid ${e.nspid}`,
  },
});
