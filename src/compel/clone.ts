// Creating tasks with chosen ids from inside a task we drive: clone3 with
// set_tid. The new task starts auto-attached (PTRACE_O_TRACECLONE/TRACEFORK
// on its creator) in a ptrace stop of its own.
//
// Ids: set_tid[0] is the id in the new task's own pid namespace (1 for the
// init of a new one); clone3 returns the id as the creator sees it. When the
// tree lives in a pid namespace of its own, that is not our id: the task is
// then found among its creator's children (processes) or tasks (threads) by
// the innermost NSpid of /proc status.
import * as fs from 'node:fs';
import { abi, wait4, tryWait4, tryKill, describeWait } from '../sys';
import { StasisError, ErrorCodes, SyscallError } from '../errors';
import { readStatus, innermostId, listTasks } from '../proc/proc';
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

export interface CloneSpec {
  flags: number;
  exitSignal?: number;
  /** Ids from the innermost pid namespace outwards (set_tid). */
  setTid: number[];
}

function innermost(pid: number): number | undefined {
  try { return innermostId(readStatus(pid), 'NSpid'); } catch { return undefined; }
}

/** Our id of a child of `parent` whose id in its own pid namespace is `vpid`. */
export function childByVpid(parent: number, vpid: number): number {
  for (const tid of listTasks(parent)) {
    let text = '';
    try { text = fs.readFileSync(`/proc/${parent}/task/${tid}/children`, 'utf8'); } catch { continue; }
    for (const s of text.trim().split(/\s+/)) if (s && innermost(Number(s)) === vpid) return Number(s);
  }
  throw new StasisError(ErrorCodes.RESTORE_FAILED, `the child with pid ${vpid} (in its pid namespace) of ${parent} cannot be found`);
}

/** Our id of the thread of `leader` whose id in its pid namespace is `vtid`. */
export function threadByVtid(leader: number, vtid: number): number {
  for (const tid of listTasks(leader)) if (innermost(tid) === vtid) return tid;
  throw new StasisError(ErrorCodes.RESTORE_FAILED, `thread ${vtid} (in its pid namespace) of ${leader} cannot be found`);
}

/**
 * clone3 in `t`; `ours(r)` turns what clone3 returned into our id of the new
 * task. Returns our id, once the new task has stopped. A taken id is
 * PID_TAKEN.
 */
export function clone(t: RemoteTask, spec: CloneSpec, ours: (r: number) => number = (r) => r): number {
  const tids = inBuf(i32s(spec.setTid));
  const args = linked(CLONE_ARGS.size, [tids], (at) => CLONE_ARGS.encode({
    flags: spec.flags, exit_signal: spec.exitSignal ?? 0, set_tid: at(tids), set_tid_size: spec.setTid.length,
  }));
  const r = t.callRaw('clone3', args, CLONE_ARGS.size);
  const want = spec.setTid[0];
  if (r === -BigInt(ERRNO.EEXIST)) throw new StasisError(ErrorCodes.PID_TAKEN, `pid ${want} is already in use; cannot restore into it`);
  if (r < 0n) throw new SyscallError('remote clone3', Number(-r), `set_tid ${spec.setTid.join(',')}`);
  const pid = ours(Number(r));
  // The new task starts in a ptrace stop of its own.
  for (let i = 0; i < 16; i++) {
    const ws = wait4(pid);
    if ((ws.kind === 'ptrace-event' && ws.event === PTRACE_EVENT.STOP) || (ws.kind === 'stopped' && ws.signal === SIG.SIGSTOP)) {
      if (innermost(pid) !== want) {
        killAndReap(pid);
        throw new StasisError(ErrorCodes.RESTORE_FAILED, `clone3 made task ${pid} with id ${innermost(pid)}, wanted ${want}`);
      }
      return pid;
    }
    if (ws.kind === 'exited' || ws.kind === 'signaled') throw new StasisError(ErrorCodes.RESTORE_FAILED, `new task ${pid} ${describeWait(ws)}`);
  }
  throw new StasisError(ErrorCodes.RESTORE_FAILED, `new task ${pid} did not stop`);
}

/** Children: clone3 in their restored parent (a fork: SIGCHLD on exit, as usual, unless `exitSignal` says otherwise). */
export function cloneChild(parent: RemoteTask, vpid: number, ownPidNs: boolean, flags = 0, exitSignal: number = SIG.SIGCHLD): number {
  return clone(parent, { flags, exitSignal, setTid: [vpid] }, ownPidNs ? (r) => childByVpid(parent.pid, r) : undefined);
}

/** Threads: clone3 in the restored leader, sharing everything a thread shares; driven through the same trampoline. */
export function cloneThread(leader: RemoteTask, vtid: number, ownPidNs: boolean): RemoteTask {
  const flags = CLONE.VM | CLONE.FS | CLONE.FILES | CLONE.SIGHAND | CLONE.THREAD | CLONE.SYSVSEM;
  const tid = clone(leader, { flags, setTid: [vtid] }, ownPidNs ? (r) => threadByVtid(leader.pid, r) : undefined);
  if (!leader.trampoline) throw new StasisError(ErrorCodes.INTERNAL, 'cloneThread needs a task driven through a trampoline');
  return RemoteTask.onTrampoline(tid, leader.trampoline);
}
