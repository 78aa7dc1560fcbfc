// core-TID.img: registers (general, fs/gs base, FPU/SSE/AVX), per-thread
// state and, for the leader, the task-wide part (comm, personality...). Other
// units fill their parts of the same entries (signals, timers, limits,
// credentials) before 'write-core'. Restore: task attributes, per-thread
// kernel state, the threads themselves, and the final registers.
import * as fs from 'node:fs';
import { abi, ptrace, sys, addressOf, type Regs } from '../sys';
import { outBuf, cstr, type RemoteTask } from '../compel/remote';
import { readStat, readStatus } from '../proc/proc';
import { parts, type Msg } from '../images/image';
import { TASK_STATE, REGS_MODE } from '../images/criu';
import { defineUnit, type RemoteCall } from '../unit/unit';
import type { ProcessDump } from '../unit/dump-ctx';
import { remoteResult } from '../errors';
import { cloneThread } from '../compel/clone';
import { altStackCall } from './signals';

const { ERRNO, ERESTART, XSAVE, FXSAVE, SYSCALL_INSN_LEN, PR, RSEQ_CS_OFFSET } = abi;

/**
 * Registers as they go into an image: a task stopped inside a syscall will
 * not resume in this kernel context, so do what the kernel's signal code
 * would on return to user space — re-execute restartable syscalls, and turn
 * a restart_block (which lives in the kernel) into EINTR.
 */
export function regsForImage(r: Regs): Regs {
  const out = { ...r };
  if (BigInt.asIntN(64, r.orig_rax) >= 0n) {
    const ax = -BigInt.asIntN(64, r.rax);
    if (ax === BigInt(ERESTART.SYS) || ax === BigInt(ERESTART.NOINTR) || ax === BigInt(ERESTART.NOHAND)) {
      out.rax = r.orig_rax;
      out.rip = r.rip - BigInt(SYSCALL_INSN_LEN);
    } else if (ax === BigInt(ERESTART.RESTARTBLOCK)) {
      out.rax = BigInt.asUintN(64, -BigInt(ERRNO.EINTR));
    }
  }
  return out;
}

/** user_regs_struct names → user_x86_regs_entry names where they differ. */
const REG_IMAGE_NAMES: Partial<Record<keyof Regs, keyof Msg<'user_x86_regs_entry'>>> = {
  rbp: 'bp', rbx: 'bx', rax: 'ax', rcx: 'cx', rdx: 'dx', rsi: 'si', rdi: 'di', orig_rax: 'orig_ax', rip: 'ip', eflags: 'flags', rsp: 'sp',
};

export function gpregsEntry(r: Regs): Msg<'user_x86_regs_entry'> {
  const e: Record<string, unknown> = { mode: REGS_MODE.NATIVE };
  for (const name of abi.USER_REGS_FIELDS) e[REG_IMAGE_NAMES[name] ?? name] = r[name];
  return e as Msg<'user_x86_regs_entry'>;
}

export function regsFromEntry(e: Msg<'user_x86_regs_entry'>): Regs {
  const r = {} as Regs;
  for (const name of abi.USER_REGS_FIELDS) r[name] = (e as unknown as Record<string, bigint>)[REG_IMAGE_NAMES[name] ?? name] ?? 0n;
  return r;
}

function u32s(buf: Buffer, off: number, count: number): number[] {
  return Array.from({ length: count }, (_, i) => buf.readUInt32LE(off + i * 4));
}

/** FXSAVE legacy region + XSAVE header + AVX upper halves. */
export function fpregsEntry(x: Buffer): Msg<'user_x86_fpregs_entry'> {
  const e: Msg<'user_x86_fpregs_entry'> = {
    cwd: x.readUInt16LE(FXSAVE.cwd), swd: x.readUInt16LE(FXSAVE.swd), twd: x.readUInt16LE(FXSAVE.twd), fop: x.readUInt16LE(FXSAVE.fop),
    rip: x.readBigUInt64LE(FXSAVE.rip), rdp: x.readBigUInt64LE(FXSAVE.rdp), mxcsr: x.readUInt32LE(FXSAVE.mxcsr), mxcsr_mask: x.readUInt32LE(FXSAVE.mxcsr_mask),
    st_space: u32s(x, FXSAVE.st_space, FXSAVE.ST_WORDS), xmm_space: u32s(x, FXSAVE.xmm_space, FXSAVE.XMM_WORDS), padding: u32s(x, FXSAVE.padding, FXSAVE.PADDING_WORDS),
  };
  if (x.length >= XSAVE.YMM_OFFSET + XSAVE.YMM_SIZE) {
    e.xsave = { xstate_bv: x.readBigUInt64LE(XSAVE.XSTATE_BV_OFFSET), ymmh_space: u32s(x, XSAVE.YMM_OFFSET, XSAVE.YMM_SIZE / 4) };
  }
  return e;
}

/** Rebuild an XSAVE area of `size` bytes (the restoring kernel's) from the image. */
export function xsaveFromEntry(e: Msg<'user_x86_fpregs_entry'>, size: number): Buffer {
  const x = Buffer.alloc(size);
  x.writeUInt16LE(e.cwd, FXSAVE.cwd); x.writeUInt16LE(e.swd, FXSAVE.swd); x.writeUInt16LE(e.twd, FXSAVE.twd); x.writeUInt16LE(e.fop, FXSAVE.fop);
  x.writeBigUInt64LE(e.rip, FXSAVE.rip); x.writeBigUInt64LE(e.rdp, FXSAVE.rdp); x.writeUInt32LE(e.mxcsr, FXSAVE.mxcsr); x.writeUInt32LE(e.mxcsr_mask, FXSAVE.mxcsr_mask);
  const put = (arr: number[] | undefined, off: number, max: number) => (arr ?? []).slice(0, max).forEach((v, i) => x.writeUInt32LE(v >>> 0, off + i * 4));
  put(e.st_space, FXSAVE.st_space, FXSAVE.ST_WORDS); put(e.xmm_space, FXSAVE.xmm_space, FXSAVE.XMM_WORDS); put(e.padding, FXSAVE.padding, FXSAVE.PADDING_WORDS);
  if (e.xsave && size >= XSAVE.YMM_OFFSET + XSAVE.YMM_SIZE) {
    x.writeBigUInt64LE(e.xsave.xstate_bv, XSAVE.XSTATE_BV_OFFSET);
    put(e.xsave.ymmh_space, XSAVE.YMM_OFFSET, XSAVE.YMM_SIZE / 4);
  }
  return x;
}

function robustList(tid: number): { head: bigint; len: number } {
  const head = Buffer.alloc(8), len = Buffer.alloc(8);
  sys('get_robust_list', tid, addressOf(head), addressOf(len));
  return { head: head.readBigUInt64LE(0), len: Number(len.readBigUInt64LE(0)) };
}

function rseqEntry(tid: number): Msg<'rseq_entry'> | undefined {
  const c = ptrace.getRseqConfiguration(tid);
  if (c.abiPointer === 0n) return undefined;
  // rseq_cs non-zero means the thread stopped inside a critical section.
  let cs = 0n;
  try {
    const b = Buffer.alloc(8);
    const fd = fs.openSync(`/proc/${tid}/mem`, 'r');
    try { fs.readSync(fd, b, 0, 8, Number(c.abiPointer + BigInt(RSEQ_CS_OFFSET))); } finally { fs.closeSync(fd); }
    cs = b.readBigUInt64LE(0);
  } catch { /* unreadable: leave 0 */ }
  return { rseq_abi_pointer: c.abiPointer, rseq_abi_size: c.abiSize, signature: c.signature, rseq_cs_pointer: cs };
}

function readNum(file: string, base = 10): number | undefined {
  try { return parseInt(fs.readFileSync(file, 'utf8').trim(), base); } catch { return undefined; }
}

interface ThreadFacts { clearTid: bigint; pdeathSig: number }
interface CoreFacts { threads: Map<number, ThreadFacts>; subreaper: Map<number, boolean> }

/** Registers and the kernel state of each thread, into the core drafts. */
function dumpCore(pd: ProcessDump, facts: CoreFacts): void {
  for (const tid of pd.frozen.threads) {
    const core = pd.core.get(tid)!;
    const tf = facts.threads.get(tid)!;
    const st = tid === pd.pid ? pd.stat : readStat(pd.pid, tid);
    const status = tid === pd.pid ? pd.status : readStatus(tid);
    const rl = robustList(tid);
    core.thread_info = { clear_tid_addr: tf.clearTid, gpregs: gpregsEntry(regsForImage(ptrace.getRegs(tid))), fpregs: fpregsEntry(ptrace.getXstate(tid)) };
    Object.assign((core.thread_core ??= {}), {
      futex_rla: rl.head, futex_rla_len: rl.len,
      blk_sigset: ptrace.getSigMask(tid), pdeath_sig: tf.pdeathSig, comm: st.comm, rseq_entry: rseqEntry(tid),
      seccomp_mode: Number(status.get('Seccomp') ?? 0),
    });
  }
  Object.assign((pd.core.get(pd.pid)!.tc ??= {}), {
    task_state: pd.frozen.stopped ? TASK_STATE.STOPPED : TASK_STATE.ALIVE,
    stop_signo: pd.frozen.stopSignal,
    exit_code: 0,
    personality: readNum(`/proc/${pd.pid}/personality`, 16) ?? 0,
    flags: pd.stat.flags,
    blk_sigset: ptrace.getSigMask(pd.pid),
    comm: pd.stat.comm,
    child_subreaper: facts.subreaper.get(pd.pid),
    old_seccomp_mode: 0,
    loginuid: readNum(`/proc/${pd.pid}/loginuid`),
    oom_score_adj: readNum(`/proc/${pd.pid}/oom_score_adj`),
  });
}

/** Per-thread kernel state that points into user memory: call once memory is back. */
export function restoreThreadState(t: RemoteTask, core: Msg<'core_entry'>): void {
  const tcore = core.thread_core;
  // Independent calls: one batch (one stop) where the task can run one.
  const calls: RemoteCall[] = [['set_tid_address', core.thread_info!.clear_tid_addr]];
  if (tcore?.futex_rla) calls.push(['set_robust_list', tcore.futex_rla, tcore.futex_rla_len]);
  const alt = altStackCall(tcore?.sas);
  if (alt) calls.push(alt);
  if (tcore?.pdeath_sig) calls.push(['prctl', PR.SET_PDEATHSIG, tcore.pdeath_sig]);
  const rs = tcore?.rseq_entry;
  if (rs && rs.rseq_abi_pointer !== 0n) calls.push(['rseq', rs.rseq_abi_pointer, rs.rseq_abi_size, 0, rs.signature]);
  t.callAll(calls);
}

/**
 * Final registers: general (orig_rax = -1 so nothing is "restarted" on
 * resume: regsForImage already rewound restartable syscalls), FPU/SSE/AVX,
 * blocked signals.
 */
export function restoreRegisters(tid: number, core: Msg<'core_entry'>, xsaveSize: number): void {
  const regs = regsFromEntry(core.thread_info!.gpregs);
  regs.orig_rax = 0xffffffffffffffffn;
  ptrace.setRegs(tid, regs);
  ptrace.setXstate(tid, xsaveFromEntry(core.thread_info!.fpregs, xsaveSize));
  ptrace.setSigMask(tid, core.thread_core?.blk_sigset ?? core.tc?.blk_sigset ?? 0n);
}

export const coreUnit = defineUnit<CoreFacts>({
  name: 'core',
  dumpState: () => ({ threads: new Map(), subreaper: new Map() }),
  parasiteCalls(_ctx, pd, st) {
    const word = outBuf(4);
    return {
      calls: [['prctl', PR.GET_CHILD_SUBREAPER, word]],
      done: (rs, t) => {
        remoteResult(rs[0], 'prctl', `PR_GET_CHILD_SUBREAPER in task ${t.pid}`);
        st.subreaper.set(pd.pid, word.data.readInt32LE(0) !== 0);
      },
    };
  },
  parasiteThreadCalls(_ctx, _pd, tid, st) {
    const addr = outBuf(8), sig = outBuf(4);
    return {
      calls: [['prctl', PR.GET_TID_ADDRESS, addr], ['prctl', PR.GET_PDEATHSIG, sig]],
      done: (rs) => {
        ['PR_GET_TID_ADDRESS', 'PR_GET_PDEATHSIG'].forEach((what, i) => remoteResult(rs[i], 'prctl', `${what} in task ${tid}`));
        st.threads.set(tid, { clearTid: addr.data.readBigUInt64LE(0), pdeathSig: sig.data.readInt32LE(0) });
      },
    };
  },
  dumpPhases: [
    { name: 'core', after: ['parasite'], each: (_ctx, pd, st) => dumpCore(pd, st) },
    {
      name: 'write-core', after: ['core'],
      each(ctx, pd) {
        for (const [tid, core] of pd.core) ctx.write(`core-${pd.vtids.get(tid)}.img`, 'CORE', parts('core_entry', [core as Msg<'core_entry'>]));
      },
    },
  ],
  restorePhases: [
    {
      name: 'task-attrs',
      each(_ctx, tr) {
        const t = tr.task;
        const tc = tr.img.threads[0].core.tc!;
        t.call('prctl', PR.SET_NAME, cstr(tc.comm.slice(0, 15)));
        if (tc.personality) t.call('personality', tc.personality);
        if (tc.child_subreaper) t.call('prctl', PR.SET_CHILD_SUBREAPER, 1);
      },
    },
    // rseq, robust list, clear_tid and altstack point into restored memory.
    { name: 'thread-state', after: ['pages', 'protections'], each: (_ctx, tr) => restoreThreadState(tr.task, tr.img.threads[0].core) },
    // Threads share the rebuilt mm, files and fs: create them once those are
    // whole. Each gets its own clear_tid, robust list, altstack and rseq.
    {
      name: 'threads', after: ['pages', 'protections', 'mm', 'files', 'fs', 'sigactions'],
      each(ctx, tr) {
        for (const th of tr.img.threads.slice(1)) {
          const t = cloneThread(tr.task, th.tid, ctx.ownPidNs);
          tr.threads.set(th.tid, t);
          restoreThreadState(t, th.core);
        }
      },
    },
  ],
});

