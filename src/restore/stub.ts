// The start of a restore: a stub process (a plain /bin/sleep) that we seize,
// strip down to a trampoline and the kernel's vdso/vvar (moved to where the
// dumped task had them), and then clone into the restored task with clone3 +
// set_tid, so the new task gets its old PID and starts with an empty address
// space ready to be rebuilt.
import { spawnSync } from 'node:child_process';
import { abi, ptrace, wait4, tryWait4, tryKill, setChildSubreaper, describeWait } from '../sys';
import { Parasite } from '../compel/parasite';
import { readMaps } from '../proc/proc';
import { StasisError, ErrorCodes, SyscallError } from '../errors';
import { VMA } from '../resources/memory';
import type { Decoded } from '../images/image';
import { RemoteTask, TRAMPOLINE_PAGES } from './remote';

const { PROT, MAP, MREMAP, PTRACE_O, CLONE, CLONE_ARGS, PAGE_SIZE, SIG, PTRACE_EVENT, WAIT } = abi;
const PAGE = BigInt(PAGE_SIZE);
const TRAMP_LEN = BigInt(TRAMPOLINE_PAGES * PAGE_SIZE);

/**
 * Start the stub as a grandchild that re-parents to us (we are a child
 * subreaper): Node's child reaper only waits for pids it spawned itself, so
 * it cannot steal this one's wait statuses.
 */
export function startStub(): number {
  setChildSubreaper(true);
  // It is needed only until the task is cloned; the sleep bounds its life should anything go wrong.
  const r = spawnSync('/bin/sh', ['-c', 'exec </dev/null 2>/dev/null; /bin/sleep 3600 >/dev/null & echo $!'], { encoding: 'utf8' });
  const pid = Number((r.stdout ?? '').trim());
  if (r.status !== 0 || !Number.isInteger(pid) || pid <= 0) {
    throw new StasisError(ErrorCodes.RESTORE_FAILED, `could not start the restore stub: ${r.error?.message ?? r.stderr}`);
  }
  // Seized at once with EXITKILL: if stasis dies from here on, the stub dies too.
  try {
    seizeStopped(pid, PTRACE_O.TRACECLONE | PTRACE_O.TRACEFORK | PTRACE_O.EXITKILL);
  } catch (e) {
    killAndReap(pid);
    throw e;
  }
  return pid;
}

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

function seizeStopped(pid: number, options: number): void {
  ptrace.seize(pid, options);
  ptrace.interrupt(pid);
  for (let i = 0; i < 16; i++) {
    const ws = wait4(pid);
    if (ws.kind === 'ptrace-event' && ws.event === PTRACE_EVENT.STOP) return;
    if (ws.kind === 'stopped') { ptrace.cont(pid, ws.signal); continue; }
    throw new StasisError(ErrorCodes.RESTORE_FAILED, `stub ${pid}: ${describeWait(ws)} while seizing`);
  }
  throw new StasisError(ErrorCodes.RESTORE_FAILED, `stub ${pid}: could not stop it`);
}

/** A free range of `len` bytes among the dumped VMAs (and away from `avoid`), high addresses first. */
export function findGap(vmas: { start: bigint; end: bigint }[], len: bigint, avoid: { start: bigint; end: bigint }[] = []): bigint {
  const TOP = 0x7fff_0000_0000n, BOTTOM = 0x1_0000_0000n;
  const busy = [...vmas, ...avoid].filter((v) => v.start < TOP).sort((a, b) => (a.start < b.start ? -1 : 1));
  let hi = TOP;
  for (let i = busy.length - 1; i >= -1; i--) {
    const lo = i >= 0 ? busy[i].end : BOTTOM;
    // Leave a guard page on each side so nothing merges with our mapping.
    if (hi > lo && hi - lo >= len + 2n * PAGE) {
      const at = ((hi - len - PAGE) / PAGE) * PAGE;
      if (at >= lo + PAGE) return at;
    }
    if (i >= 0 && busy[i].start < hi) hi = busy[i].start;
  }
  throw new StasisError(ErrorCodes.RESTORE_FAILED, 'no free address range for the restore trampoline');
}

interface SpecialVma { name: string; start: bigint; end: bigint }

/**
 * Turn the stub into an empty shell: trampoline mapped at a free address,
 * rseq unregistered, every other mapping gone, vdso/vvar at the dumped
 * addresses. Returns the trampoline address.
 */
export function prepareStub(stub: number, allDumpedVmas: Decoded[], rootVmas: Decoded[]): bigint {
  const stubMaps = readMaps(stub);
  const dumped = allDumpedVmas.map((v) => ({ start: v.start as bigint, end: v.end as bigint }));
  const tramp = findGap(dumped, TRAMP_LEN, stubMaps);
  // First call runs at the stub's own vdso, to map the trampoline.
  const p0 = Parasite.prepare(stub, { mode: 'int3' });
  try {
    p0.syscall('mmap', tramp, TRAMP_LEN, PROT.READ | PROT.WRITE | PROT.EXEC, MAP.PRIVATE | MAP.ANONYMOUS | MAP.FIXED_NOREPLACE, -1, 0);
  } finally {
    p0.cure();
  }
  const t = new RemoteTask(stub, tramp);
  // glibc registered rseq in its TLS: unmapping that with rseq still
  // registered makes every return to user space fault.
  const rseq = ptrace.getRseqConfiguration(stub);
  if (rseq.abiPointer !== 0n) t.call('rseq', rseq.abiPointer, rseq.abiSize, 1 /* RSEQ_FLAG_UNREGISTER */, rseq.signature);

  for (const v of stubMaps) {
    if (v.start === tramp || isSpecial(v.path) || v.path === '[vsyscall]') continue;
    t.call('munmap', v.start, v.end - v.start);
  }
  moveVdso(t, rootVmas);
  return tramp;
}

function isSpecial(path: string): boolean {
  return path === '[vdso]' || path === '[vvar]' || path === '[vvar_vclock]';
}

/** Move the task's [vvar]/[vvar_vclock]/[vdso] to where the dumped task had them. */
export function moveVdso(t: RemoteTask, dumpedVmas: Decoded[]): void {
  const tramp = t.trampoline;
  const live: SpecialVma[] = readMaps(t.pid).filter((v) => isSpecial(v.path)).map((v) => ({ name: v.path, start: v.start, end: v.end }));
  const want = dumpedVmas.filter((v) => v.status & (VMA.AREA_VDSO | VMA.AREA_VVAR))
    .map((v) => ({ start: v.start as bigint, end: v.end as bigint, status: v.status as number }));
  live.sort((a, b) => (a.start < b.start ? -1 : 1));
  const same = want.length === live.length && want.every((v, i) => v.end - v.start === live[i].end - live[i].start &&
    ((v.status & VMA.AREA_VDSO) !== 0) === (live[i].name === '[vdso]'));
  if (!same) {
    const d = (xs: { start: bigint; end: bigint }[]) => xs.map((x) => `${(x.end - x.start) / PAGE}p`).join(',');
    throw new StasisError(ErrorCodes.RESTORE_FAILED, `the vdso/vvar layout here (${d(live)}) differs from the dumped one (${d(want)}): images from another kernel?`);
  }
  if (live.every((v, i) => v.start === want[i].start)) return;
  // Two steps via a range that neither the live nor the dumped ones touch, so
  // no move lands on a piece not yet moved.
  const total = live.reduce((a, v) => a + (v.end - v.start), 0n);
  const tmp = findGap(dumpedVmas.map((v) => ({ start: v.start, end: v.end })), total, [...live, { start: tramp, end: tramp + TRAMP_LEN }]);
  let at = tmp;
  const moved: bigint[] = [];
  for (const v of live) {
    t.call('mremap', v.start, v.end - v.start, v.end - v.start, MREMAP.MAYMOVE | MREMAP.FIXED, at);
    moved.push(at);
    at += v.end - v.start;
  }
  live.forEach((v, i) => {
    t.call('mremap', moved[i], v.end - v.start, v.end - v.start, MREMAP.MAYMOVE | MREMAP.FIXED, want[i].start);
  });
}

/**
 * clone3 in the stub with set_tid = pid: the new task (auto-attached through
 * PTRACE_O_TRACECLONE) is a copy of the emptied stub. CLONE_PARENT makes it
 * our child rather than the stub's, so we can wait for it like criu does.
 */
export function cloneTask(stub: RemoteTask, pid: number): number {
  return cloneWithTid(stub, pid, CLONE.PARENT);
}

/** Children: clone3 in their restored parent (a fork: SIGCHLD on exit, as usual). */
export function cloneChild(parent: RemoteTask, pid: number): number {
  return cloneWithTid(parent, pid, 0, SIG.SIGCHLD);
}

/** Threads: clone3 in the restored leader, sharing everything a thread shares. */
export function cloneThread(leader: RemoteTask, tid: number): number {
  return cloneWithTid(leader, tid, CLONE.VM | CLONE.FS | CLONE.FILES | CLONE.SIGHAND | CLONE.THREAD | CLONE.SYSVSEM);
}

function cloneWithTid(stub: RemoteTask, pid: number, flags: number, exitSignal = 0): number {
  const args = Buffer.alloc(CLONE_ARGS.SIZE + 8);
  const setTidAt = stub.scratch + BigInt(CLONE_ARGS.SIZE);
  args.writeBigUInt64LE(BigInt(flags), CLONE_ARGS.flags);
  args.writeBigUInt64LE(BigInt(exitSignal), CLONE_ARGS.exit_signal);
  args.writeBigUInt64LE(setTidAt, CLONE_ARGS.set_tid);
  args.writeBigUInt64LE(1n, CLONE_ARGS.set_tid_size);
  args.writeInt32LE(pid, CLONE_ARGS.SIZE);
  stub.put(args);
  const r = stub.callRaw('clone3', stub.scratch, CLONE_ARGS.SIZE);
  if (r === -17n) throw new StasisError(ErrorCodes.PID_TAKEN, `pid ${pid} is already in use; cannot restore into it`);
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
