// Creating tasks with chosen ids from inside a task we drive: clone3 with
// set_tid. The new task starts auto-attached (PTRACE_O_TRACECLONE/TRACEFORK
// on its creator) in a ptrace stop of its own.
import { abi, ptrace, wait4, tryWait4, tryKill, describeWait } from '../sys';
import { StasisError, ErrorCodes, SyscallError } from '../errors';
import { inBuf, linked, RemoteTask } from './remote';

const { CLONE, CLONE_ARGS, SIG, PTRACE_EVENT, WAIT, ERRNO, i32s } = abi;

/** Kill and reap a process we started (stub or half-made task). */
export function killAndReap(pid: number, threads: number[] = []): void {
  tryKill(pid, SIG.SIGKILL);
  // Traced threads first: a dead leader is not reported while they are unreaped.
  // Never block for long: they are dead either way.
  const deadline = Date.now() + 3000;
  for (const tid of [...threads.filter((t) => t !== pid), pid]) {
    while (Date.now() < deadline) {
      const r = tryWait4(tid, WAIT.WNOHANG);
      if (typeof r === 'number') break; // ECHILD: not ours / already reaped
      if (r.kind === 'exited' || r.kind === 'signaled') break;
    }
  }
}

/**
 * clone3 in `t` with set_tid = [pid] (one pid namespace level): the new
 * task's id is `pid` or the call fails.
 */
export function cloneWithTid(t: RemoteTask, pid: number, flags: number, exitSignal = 0): number {
  const tids = inBuf(i32s([pid]));
  const args = linked(CLONE_ARGS.size, [tids], (at) => CLONE_ARGS.encode({ flags, exit_signal: exitSignal, set_tid: at(tids), set_tid_size: 1 }));
  const r = t.callRaw('clone3', args, CLONE_ARGS.size);
  if (r === -BigInt(ERRNO.EEXIST)) throw new StasisError(ErrorCodes.PID_TAKEN, `pid ${pid} is already in use; cannot restore into it`);
  if (r < 0n) throw new SyscallError('remote clone3', Number(-r), `set_tid ${pid}`);
  if (Number(r) !== pid) {
    killAndReap(Number(r));
    throw new StasisError(ErrorCodes.RESTORE_FAILED, `clone3 gave pid ${r}, wanted ${pid}`);
  }
  // The new task starts in a ptrace stop of its own.
  for (let i = 0; i < 16; i++) {
    const ws = wait4(pid);
    if (ws.kind === 'ptrace-event' && ws.event === PTRACE_EVENT.STOP) return pid;
    if (ws.kind === 'stopped' && ws.signal === SIG.SIGSTOP) return pid;
    if (ws.kind === 'exited' || ws.kind === 'signaled') throw new StasisError(ErrorCodes.RESTORE_FAILED, `new task ${pid} ${describeWait(ws)}`);
  }
  throw new StasisError(ErrorCodes.RESTORE_FAILED, `new task ${pid} did not stop`);
}

/**
 * The root of a restored tree, cloned from the stub. CLONE_PARENT makes it
 * our child rather than the stub's, so we can wait for it like criu does.
 */
export function cloneTask(stub: RemoteTask, pid: number): number {
  return cloneWithTid(stub, pid, CLONE.PARENT);
}

/** Children: clone3 in their restored parent (a fork: SIGCHLD on exit, as usual). */
export function cloneChild(parent: RemoteTask, pid: number): number {
  return cloneWithTid(parent, pid, 0, SIG.SIGCHLD);
}

/** Threads: clone3 in the restored leader, sharing everything a thread shares; driven through the same trampoline. */
export function cloneThread(leader: RemoteTask, tid: number): RemoteTask {
  cloneWithTid(leader, tid, CLONE.VM | CLONE.FS | CLONE.FILES | CLONE.SIGHAND | CLONE.THREAD | CLONE.SYSVSEM);
  if (!leader.trampoline) throw new StasisError(ErrorCodes.INTERNAL, 'cloneThread needs a task driven through a trampoline');
  return RemoteTask.onTrampoline(tid, leader.trampoline);
}

