// A task of our own, with all of stasis's privileges, for work that must be
// done from inside a namespace the tree lives in: a detached clone of a
// container's tmpfs (open_tree) needs CAP_SYS_ADMIN over its mount namespace,
// which the container's own tasks do not hold, and stasis cannot enter that
// namespace itself (setns(CLONE_NEWNS) refuses a process whose threads share
// its root and cwd, as Node's do). It is a restore stub (restore/stub.ts),
// seized and driven like a parasite, killed when done.
import { Parasite } from './parasite';
import { RemoteTask, SCRATCH_LEN } from './remote';
import { killAndReap } from './clone';
import { startStub, stubCode } from '../restore/stub';

export function withHelperTask<T>(f: (t: RemoteTask) => T): T {
  const pid = startStub();
  try {
    const code = stubCode(pid);
    const p = Parasite.prepare(pid, code === undefined ? { mode: 'int3' } : { codeAddr: code, mode: 'int3' });
    const scratch = p.mapScratch(SCRATCH_LEN);
    return f(new RemoteTask(p, scratch, SCRATCH_LEN));
  } finally {
    killAndReap(pid);
  }
}
