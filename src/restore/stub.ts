// The start of a restore: a stub process (a tiny static program of ours run
// from a memfd: stub-elf.ts) that we seize, strip down to a trampoline and the
// kernel's vdso/vvar (moved to where the dumped task had them), and then clone
// into the restored task with clone3 + set_tid (compel/clone.ts), so the new
// task gets its old PID and starts with an empty address space ready to be
// rebuilt. Its exe link is the memfd, which no restored process maps: the
// kernel lets each restored task switch its exe link away from it.
import * as fs from 'node:fs';
import { abi, ptrace, wait4, setChildSubreaper, describeWait, sys, addressOf, getpid, spawnDirect } from '../sys';
import { Parasite } from '../compel/parasite';
import { RemoteTask, TRAMPOLINE_PAGES, trampolineAt } from '../compel/remote';
import { killAndReap } from '../compel/clone';
import { readMaps } from '../proc/proc';
import { StasisError, ErrorCodes, SyscallError } from '../errors';
import { stubElf, STUB_FD } from './stub-elf';
import { VMA } from '../images/criu';
import type { Msg } from '../images/schema';

const { PROT, MAP, MREMAP, PTRACE_O, PAGE_SIZE, PTRACE_EVENT, RSEQ_FLAG_UNREGISTER, MFD, ERRNO, F, O } = abi;
const PAGE = BigInt(PAGE_SIZE);
const TRAMP_LEN = BigInt(TRAMPOLINE_PAGES * PAGE_SIZE);

/** The stub program in a memfd (close-on-exec here: the starter gets it as fd STUB_FD). */
function stubMemfd(): { fd: number; trampoline: bigint } {
  const name = Buffer.from('stasis-stub\0');
  let fd: number;
  try {
    // MFD_EXEC: where vm.memfd_noexec makes memfds non-executable by default.
    fd = sys('memfd_create', addressOf(name), MFD.CLOEXEC | MFD.EXEC);
  } catch (e) {
    if (!(e instanceof SyscallError && e.errno === ERRNO.EINVAL)) throw e;
    fd = sys('memfd_create', addressOf(name), MFD.CLOEXEC); // a kernel before MFD_EXEC
  }
  const stub = stubElf(getpid());
  try {
    fs.writeSync(fd, stub.image);
  } catch (e) {
    fs.closeSync(fd);
    throw e;
  }
  return { fd, trampoline: stub.trampoline };
}

/** Where a started stub has its `syscall; int3`, by pid. */
const trampolines = new Map<number, bigint>();

/** A started stub's own `syscall; int3` (for a parasite in it). */
export function stubCode(stub: number): bigint | undefined {
  return trampolines.get(stub);
}

/**
 * Start the stub as our child by posix_spawn (no shell: sh's start and a
 * fork of this process were ~20 ms of a small restore): it is no child that
 * Node's reaper waits for, so its wait statuses stay ours. Seized at once
 * with EXITKILL; the stub itself exits if we die before that (see
 * stub-elf.ts). Its stdin, stdout and stderr are /dev/null.
 */
export function startStub(): number {
  setChildSubreaper(true);
  const mfd = stubMemfd();
  let pid: number;
  try {
    // dup2 onto itself would leave close-on-exec set: hand it on from another fd then.
    const from = mfd.fd === STUB_FD ? sys('fcntl', mfd.fd, F.DUPFD_CLOEXEC, STUB_FD + 1) : mfd.fd;
    try {
      const devNull = (fd: number, flags: number) => ({ fd, path: '/dev/null', flags });
      pid = spawnDirect(`/proc/self/fd/${from}`, [`/proc/self/fd/${STUB_FD}`], {
        dup2: [{ from, to: STUB_FD }],
        open: [devNull(0, O.RDONLY), devNull(1, O.WRONLY), devNull(2, O.WRONLY)],
      });
    } finally {
      if (from !== mfd.fd) fs.closeSync(from);
    }
  } catch (e) {
    throw new StasisError(ErrorCodes.RESTORE_FAILED, `could not start the restore stub: ${(e as Error).message}`);
  } finally {
    fs.closeSync(mfd.fd);
  }
  try {
    seizeStopped(pid, PTRACE_O.TRACECLONE | PTRACE_O.TRACEFORK | PTRACE_O.EXITKILL);
  } catch (e) {
    killAndReap(pid);
    throw e;
  }
  trampolines.set(pid, mfd.trampoline);
  return pid;
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
 * addresses. Returns the stub, driven through the trampoline.
 */
export function prepareStub(stub: number, allDumpedVmas: Msg<'vma_entry'>[], rootVmas: Msg<'vma_entry'>[]): RemoteTask {
  const stubMaps = readMaps(stub);
  const tramp = findGap(allDumpedVmas, TRAMP_LEN, stubMaps);
  // First call runs at the stub's own `syscall; int3`, to map the trampoline.
  const own = trampolines.get(stub);
  const p0 = Parasite.prepare(stub, own === undefined ? { mode: 'int3' } : { codeAddr: own, mode: 'int3' });
  try {
    p0.syscall('mmap', tramp, TRAMP_LEN, PROT.READ | PROT.WRITE | PROT.EXEC, MAP.PRIVATE | MAP.ANONYMOUS | MAP.FIXED_NOREPLACE, -1, 0);
  } finally {
    p0.cure();
  }
  const t = RemoteTask.onTrampoline(stub, trampolineAt(tramp));
  // A stub with a libc may have registered rseq in its TLS: unmapping that
  // with rseq still registered makes every return to user space fault.
  const rseq = ptrace.getRseqConfiguration(stub);
  if (rseq.abiPointer !== 0n) t.call('rseq', rseq.abiPointer, rseq.abiSize, RSEQ_FLAG_UNREGISTER, rseq.signature);

  t.callAll(stubMaps.filter((v) => v.start !== tramp && !isSpecial(v.path) && v.path !== '[vsyscall]').map((v) => ['munmap', v.start, v.end - v.start]));
  // The maps read above still hold: munmap of the others moved no vdso/vvar.
  moveVdso(t, rootVmas, stubMaps);
  return t;
}

function isSpecial(path: string): boolean {
  return path === '[vdso]' || path === '[vvar]' || path === '[vvar_vclock]';
}

/**
 * Move the task's [vvar]/[vvar_vclock]/[vdso] to where the dumped task had
 * them; `maps`: the task's, when just read.
 */
export function moveVdso(t: RemoteTask, dumpedVmas: Msg<'vma_entry'>[], maps = readMaps(t.pid)): void {
  const tramp = t.trampoline!.code;
  const live: SpecialVma[] = maps.filter((v) => isSpecial(v.path)).map((v) => ({ name: v.path, start: v.start, end: v.end }));
  const want = dumpedVmas.filter((v) => v.status & (VMA.AREA_VDSO | VMA.AREA_VVAR))
    .map((v) => ({ start: v.start, end: v.end, status: v.status }));
  live.sort((a, b) => (a.start < b.start ? -1 : 1));
  // The dumped task had unmapped them all (as a program may): so ours go.
  if (want.length === 0) {
    t.callAll(live.map((v) => ['munmap', v.start, v.end - v.start]));
    return;
  }
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
  const tmp = findGap(dumpedVmas, total, [...live, { start: tramp, end: tramp + TRAMP_LEN }]);
  let at = tmp;
  const moved: bigint[] = [];
  for (const v of live) {
    moved.push(at);
    at += v.end - v.start;
  }
  // One batch (one stop): the calls run in order, every first step before any second.
  const move = (from: bigint, v: SpecialVma, to: bigint): ['mremap', ...bigint[]] => ['mremap', from, v.end - v.start, v.end - v.start, BigInt(MREMAP.MAYMOVE | MREMAP.FIXED), to];
  t.callAll([...live.map((v, i) => move(v.start, v, moved[i])), ...live.map((v, i) => move(moved[i], v, want[i].start))]);
}

