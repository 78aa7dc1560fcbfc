// core-TID.img: registers (general, fs/gs base, FPU/SSE/AVX), per-thread state
// and, for the leader, the task-wide part (comm, personality, signals,
// timers, rlimits...).
import * as fs from 'node:fs';
import { abi, ptrace, sys, addressOf, type Regs } from '../sys';
import { writeImage, type Entry, type Decoded } from '../images/image';
import type { DumpCtx, ProcessDump } from '../dump/context';
import { readStat, readStatus } from '../proc/proc';
import { pendingSignals } from './signals';
import { dumpRlimits } from './rlimits';

const { ERESTART, XSAVE, SYSCALL_INSN_LEN } = abi;

export const TASK_STATE = { ALIVE: 1, DEAD: 2, STOPPED: 3, HELPER: 4, THREAD: 5, ZOMBIE: 6 } as const;

const EINTR = 4n;

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
      out.rax = BigInt.asUintN(64, -EINTR);
    }
  }
  return out;
}

const REG_IMAGE_NAMES: Record<string, string> = { rbp: 'bp', rbx: 'bx', rax: 'ax', rcx: 'cx', rdx: 'dx', rsi: 'si', rdi: 'di', orig_rax: 'orig_ax', rip: 'ip', eflags: 'flags', rsp: 'sp' };

export function gpregsEntry(r: Regs): Entry {
  const e: Entry = {};
  for (const [k, v] of Object.entries(r)) e[REG_IMAGE_NAMES[k] ?? k] = v;
  e.mode = 1; // NATIVE
  return e;
}

export function regsFromEntry(e: Decoded): Regs {
  const r = {} as Regs;
  for (const name of abi.USER_REGS_FIELDS) r[name] = BigInt(e[REG_IMAGE_NAMES[name] ?? name] ?? 0n);
  return r;
}

function u32s(buf: Buffer, off: number, count: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < count; i++) out.push(buf.readUInt32LE(off + i * 4));
  return out;
}

/** FXSAVE legacy region + XSAVE header + AVX upper halves. */
export function fpregsEntry(x: Buffer): Entry {
  const e: Entry = {
    cwd: x.readUInt16LE(0), swd: x.readUInt16LE(2), twd: x.readUInt16LE(4), fop: x.readUInt16LE(6),
    rip: x.readBigUInt64LE(8), rdp: x.readBigUInt64LE(16), mxcsr: x.readUInt32LE(24), mxcsr_mask: x.readUInt32LE(28),
    st_space: u32s(x, 32, 32), xmm_space: u32s(x, 160, 64), padding: u32s(x, 416, 24),
  };
  if (x.length >= XSAVE.YMM_OFFSET + XSAVE.YMM_SIZE) {
    e.xsave = { xstate_bv: x.readBigUInt64LE(XSAVE.XSTATE_BV_OFFSET), ymmh_space: u32s(x, XSAVE.YMM_OFFSET, 64) };
  }
  return e;
}

/** Rebuild an XSAVE area of `size` bytes (the restoring kernel's) from the image. */
export function xsaveFromEntry(e: Decoded, size: number): Buffer {
  const x = Buffer.alloc(size);
  x.writeUInt16LE(e.cwd, 0); x.writeUInt16LE(e.swd, 2); x.writeUInt16LE(e.twd, 4); x.writeUInt16LE(e.fop, 6);
  x.writeBigUInt64LE(e.rip, 8); x.writeBigUInt64LE(e.rdp, 16); x.writeUInt32LE(e.mxcsr, 24); x.writeUInt32LE(e.mxcsr_mask, 28);
  const put = (arr: number[] | undefined, off: number) => (arr ?? []).forEach((v, i) => x.writeUInt32LE(v >>> 0, off + i * 4));
  put(e.st_space, 32); put(e.xmm_space, 160); put(e.padding, 416);
  if (e.xsave && size >= XSAVE.YMM_OFFSET + XSAVE.YMM_SIZE) {
    x.writeBigUInt64LE(e.xsave.xstate_bv, XSAVE.XSTATE_BV_OFFSET);
    put(e.xsave.ymmh_space, XSAVE.YMM_OFFSET);
  }
  return x;
}

function capWords(hex: string | undefined): number[] {
  const v = BigInt('0x' + (hex ?? '0'));
  return [Number(v & 0xffffffffn), Number(v >> 32n)];
}

export function credsEntry(status: Map<string, string>, secbits: number): Entry {
  const ids = (k: string) => (status.get(k) ?? '0 0 0 0').split(/\s+/).map(Number);
  const [uid, euid, suid, fsuid] = ids('Uid');
  const [gid, egid, sgid, fsgid] = ids('Gid');
  const groups = (status.get('Groups') ?? '').split(/\s+/).filter(Boolean).map(Number);
  return {
    uid, gid, euid, egid, suid, sgid, fsuid, fsgid,
    cap_inh: capWords(status.get('CapInh')), cap_prm: capWords(status.get('CapPrm')),
    cap_eff: capWords(status.get('CapEff')), cap_bnd: capWords(status.get('CapBnd')),
    secbits, groups,
  };
}

function robustList(tid: number): { head: bigint; len: number } {
  const head = Buffer.alloc(8), len = Buffer.alloc(8);
  sys('get_robust_list', tid, addressOf(head), addressOf(len));
  return { head: head.readBigUInt64LE(0), len: Number(len.readBigUInt64LE(0)) };
}

function rseqEntry(tid: number): Entry | undefined {
  const c = ptrace.getRseqConfiguration(tid);
  if (c.abiPointer === 0n) return undefined;
  // rseq_cs (offset 8 in struct rseq) non-zero means the thread stopped inside
  // a critical section.
  let cs = 0n;
  try {
    const b = Buffer.alloc(8);
    const fd = fs.openSync(`/proc/${tid}/mem`, 'r');
    try { fs.readSync(fd, b, 0, 8, Number(c.abiPointer + 8n)); } finally { fs.closeSync(fd); }
    cs = b.readBigUInt64LE(0);
  } catch { /* unreadable: leave 0 */ }
  return { rseq_abi_pointer: c.abiPointer, rseq_abi_size: c.abiSize, signature: c.signature, rseq_cs_pointer: cs };
}

function threadCore(pd: ProcessDump, tid: number): Entry {
  const st = tid === pd.pid ? pd.stat : readStat(pd.pid, tid);
  const status = tid === pd.pid ? pd.status : readStatus(tid);
  const tf = pd.threads.get(tid)!;
  const rl = robustList(tid);
  return {
    futex_rla: rl.head, futex_rla_len: rl.len, sched_nice: st.nice, sched_policy: st.policy, sched_prio: st.rtPriority,
    blk_sigset: ptrace.getSigMask(tid), sas: tf.sas, pdeath_sig: tf.pdeathSig,
    signals_p: pendingSignals(tid, false), creds: credsEntry(status, pd.parasite.secbits),
    seccomp_mode: Number(status.get('Seccomp') ?? 0), comm: st.comm, rseq_entry: rseqEntry(tid),
  };
}

function readNum(file: string, base = 10): number | undefined {
  try { return parseInt(fs.readFileSync(file, 'utf8').trim(), base); } catch { return undefined; }
}

export function dumpCore(ctx: DumpCtx, pd: ProcessDump): void {
  for (const tid of pd.frozen.threads) {
    const regs = ptrace.getRegs(tid);
    const xsave = ptrace.getXstate(tid);
    const core: Entry = {
      mtype: 1, // X86_64
      thread_info: {
        clear_tid_addr: pd.threads.get(tid)!.clearTidAddr,
        gpregs: gpregsEntry(regsForImage(regs)),
        fpregs: fpregsEntry(xsave),
      },
      thread_core: threadCore(pd, tid),
    };
    if (tid === pd.pid) {
      core.tc = {
        task_state: pd.frozen.stopped ? TASK_STATE.STOPPED : TASK_STATE.ALIVE,
        exit_code: 0,
        personality: readNum(`/proc/${pd.pid}/personality`, 16) ?? 0,
        flags: pd.stat.flags,
        blk_sigset: ptrace.getSigMask(tid),
        comm: pd.stat.comm,
        timers: { ...pd.parasite.itimers, posix: pd.parasite.posixTimers },
        rlimits: dumpRlimits(pd.pid),
        signals_s: pendingSignals(tid, true),
        old_seccomp_mode: 0,
        loginuid: readNum(`/proc/${pd.pid}/loginuid`),
        oom_score_adj: readNum(`/proc/${pd.pid}/oom_score_adj`),
        sigactions: pd.parasite.sigactions,
        child_subreaper: pd.parasite.childSubreaper,
      };
    }
    writeImage(ctx.opts.dir, `core-${tid}.img`, 'CORE', [['core_entry', core]]);
  }
}

// ---------------------------------------------------------------- restore

import type { RestoreCtx, TaskRestore } from '../restore/context';
import type { RemoteTask } from '../restore/remote';
import { restoreAltStack } from './signals';

/** Task-wide attributes: name, personality. */
export function restoreTaskAttrs(_ctx: RestoreCtx, tr: TaskRestore): void {
  const t = tr.task;
  const tc = tr.img.threads[0].core.tc;
  t.call('prctl', abi.PR.SET_NAME, t.putString(String(tc.comm).slice(0, 15)));
  if (tc.personality) t.call('personality', tc.personality);
  if (tc.child_subreaper) t.call('prctl', abi.PR.SET_CHILD_SUBREAPER, 1);
}

/** Per-thread kernel state that points into user memory: call once memory is back. */
export function restoreThreadState(t: RemoteTask, core: Decoded): void {
  const tcore = core.thread_core ?? {};
  t.call('set_tid_address', BigInt(core.thread_info.clear_tid_addr));
  if (tcore.futex_rla && BigInt(tcore.futex_rla) !== 0n) t.call('set_robust_list', BigInt(tcore.futex_rla), tcore.futex_rla_len);
  restoreAltStack(t, tcore.sas);
  if (tcore.pdeath_sig) t.call('prctl', abi.PR.SET_PDEATHSIG, tcore.pdeath_sig);
  const rs = tcore.rseq_entry;
  if (rs && BigInt(rs.rseq_abi_pointer) !== 0n) t.call('rseq', BigInt(rs.rseq_abi_pointer), rs.rseq_abi_size, 0, rs.signature);
}

/**
 * Final registers: general (orig_rax = -1 so nothing is "restarted" on
 * resume: regsForImage already rewound restartable syscalls), FPU/SSE/AVX,
 * blocked signals.
 */
export function restoreRegisters(tid: number, core: Decoded, xsaveSize: number): void {
  const regs = regsFromEntry(core.thread_info.gpregs);
  regs.orig_rax = 0xffffffffffffffffn;
  ptrace.setRegs(tid, regs);
  ptrace.setXstate(tid, xsaveFromEntry(core.thread_info.fpregs, xsaveSize));
  const blk = core.thread_core?.blk_sigset ?? core.tc?.blk_sigset ?? 0n;
  ptrace.setSigMask(tid, BigInt(blk));
}
