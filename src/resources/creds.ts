// Credentials of each thread: uids and gids (real, effective, saved, fs),
// supplementary groups, the five capability sets, securebits and
// no_new_privs, into thread_core.creds.
//
// Restore: every task starts with the credentials of the restore's own
// programs (the stub's) and keeps them while the other phases need them;
// the 'creds' phase, after every other, takes each thread to exactly its
// dumped credentials (creds-rules.ts: the calls and their order). Before
// anything is created, `validate` checks that the restore may do that at
// all (re-create pids, reach those uids and capabilities) and refuses
// otherwise, naming what is missing.
import * as fs from 'node:fs';
import { childProcess } from '../node-lazy';
import { abi, prctl, sysTry } from '../sys';
import { readStatus } from '../proc/proc';
import { inBuf, type RemoteTask } from '../compel/remote';
import { StasisError, ErrorCodes, errnoName, remoteResult } from '../errors';
import type { Msg } from '../images/schema';
import { defineUnit } from '../unit/unit';
import type { Loading } from '../unit/checkpoint';
import type { RestoreCtx, TaskRestore } from '../unit/restore-ctx';
import { memoryUnit } from './memory';
import { credsPlan, credsCheck, credsDiff, capNames, allCaps, type Creds, type CredStep } from './creds-rules';

const { PR, PR_CAP_AMBIENT, CAP, SECBIT, CAP_HEADER, CAP_DATA, LINUX_CAPABILITY_VERSION_3, NS_GET_USERNS, O } = abi;

/** creds_entry from /proc/PID/task/TID/status lines and the thread's securebits. */
export function credsEntry(status: Map<string, string>, secbits: number): Msg<'creds_entry'> {
  const c = credsFromStatus(status, secbits);
  const w = (v: bigint) => [Number(v & 0xffffffffn), Number(v >> 32n)];
  return {
    uid: c.uids[0], euid: c.uids[1], suid: c.uids[2], fsuid: c.uids[3],
    gid: c.gids[0], egid: c.gids[1], sgid: c.gids[2], fsgid: c.gids[3],
    cap_inh: w(c.inh), cap_prm: w(c.prm), cap_eff: w(c.eff), cap_bnd: w(c.bnd), cap_amb: w(c.amb),
    secbits, groups: c.groups, no_new_privs: c.nnp ? 1 : 0,
  };
}

/** The credentials that /proc/PID/status shows (securebits are not there). */
export function credsFromStatus(status: Map<string, string>, secbits: number): Creds {
  const ids = (k: string) => (status.get(k) ?? '0 0 0 0').split(/\s+/).map(Number) as Creds['uids'];
  const cap = (k: string) => BigInt('0x' + (status.get(k) ?? '0'));
  return {
    uids: ids('Uid'), gids: ids('Gid'),
    groups: (status.get('Groups') ?? '').split(/\s+/).filter(Boolean).map(Number),
    inh: cap('CapInh'), prm: cap('CapPrm'), eff: cap('CapEff'), bnd: cap('CapBnd'), amb: cap('CapAmb'),
    secbits, nnp: status.get('NoNewPrivs') === '1',
  };
}

export function credsFromEntry(e: Msg<'creds_entry'>): Creds {
  const set = (w: number[] | undefined) => BigInt((w ?? [])[0] ?? 0) | (BigInt((w ?? [])[1] ?? 0) << 32n);
  return {
    uids: [e.uid, e.euid, e.suid, e.fsuid], gids: [e.gid, e.egid, e.sgid, e.fsgid],
    // The kernel keeps groups sorted; so does /proc, and so does setgroups.
    groups: [...(e.groups ?? [])].sort((a, b) => a - b),
    inh: set(e.cap_inh), prm: set(e.cap_prm), eff: set(e.cap_eff), bnd: set(e.cap_bnd), amb: set(e.cap_amb),
    secbits: e.secbits, nnp: (e.no_new_privs ?? 0) !== 0,
  };
}

function capLastCap(): number {
  return Number(fs.readFileSync('/proc/sys/kernel/cap_last_cap', 'utf8').trim());
}

// ---- load: what an image may say at all

function checkEntry(where: string, e: Msg<'creds_entry'> | undefined): Creds {
  const bad = (m: string) => new StasisError(ErrorCodes.BAD_IMAGE, `${where}: ${m}`);
  if (!e) throw bad('no credentials (thread_core.creds); the old separate creds image is not supported');
  for (const k of ['cap_inh', 'cap_prm', 'cap_eff', 'cap_bnd', 'cap_amb'] as const) {
    if ((e[k]?.length ?? 0) > 2) throw bad(`${k} has ${e[k]!.length} words; at most 2 (64 capabilities)`);
  }
  const c = credsFromEntry(e);
  if (c.eff & ~c.prm) throw bad(`effective capabilities ${capNames(c.eff & ~c.prm)} are not permitted`);
  if (c.amb & ~(c.prm & c.inh)) throw bad(`ambient capabilities ${capNames(c.amb & ~(c.prm & c.inh))} are not both permitted and inheritable`);
  if (e.secbits & ~0xfff) throw bad(`unknown securebits 0x${e.secbits.toString(16)}`);
  return c;
}

type Loaded = Map<number, Creds>;

function load(ld: Loading): Loaded {
  const out: Loaded = new Map();
  for (const p of ld.processes) {
    for (const th of p.threads) out.set(th.tid, checkEntry(ld.images.path(`core-${th.tid}.img`), th.core.thread_core?.creds));
  }
  return out;
}

// ---- validate: may this restore create what the images describe?

/**
 * The credentials every restored task starts with: those of a program the
 * restore starts (the stub is one), read from such a program; securebits
 * are ours (kept across exec, but for KEEP_CAPS).
 */
export function restorerCreds(): Creds {
  return execedCreds(readStatus(process.pid), prctl(PR.GET_SECUREBITS)) ?? startedCreds();
}

/**
 * What an exec by a process with `status` and `secbits` gives a program
 * without file capabilities or set-id bits (the stub), when that is simple:
 * root in every uid (SECBIT_NOROOT clear), no no_new_privs, not traced.
 * Then (capabilities(7), the kernel's cap_bprm_creds_from_file) permitted
 * and effective become the bounding set | inheritable | ambient, saved and fs
 * ids follow the effective ones; everything else stays. Otherwise undefined
 * (a started program is asked: startedCreds).
 */
export function execedCreds(status: Map<string, string>, secbits: number): Creds | undefined {
  const c = credsFromStatus(status, secbits & ~SECBIT.KEEP_CAPS);
  if (c.uids.some((u) => u !== 0) || secbits & SECBIT.NOROOT || c.nnp || (status.get('TracerPid') ?? '0') !== '0') return undefined;
  const prm = c.bnd | c.inh | c.amb;
  return { ...c, gids: [c.gids[0], c.gids[1], c.gids[1], c.gids[1]], prm, eff: prm };
}

/** The credentials of a program we start, read from it. */
export function startedCreds(): Creds {
  const r = childProcess().spawnSync('/bin/cat', ['/proc/self/status'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  if (r.status !== 0) throw new StasisError(ErrorCodes.RESTORE_FAILED, `could not read the credentials of a started program: ${r.error?.message ?? r.stderr}`);
  const st = new Map(r.stdout.split('\n').map((l) => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 1).trim()] as [string, string]));
  return credsFromStatus(st, prctl(PR.GET_SECUREBITS) & ~SECBIT.KEEP_CAPS);
}

function who(c: Creds): string {
  return `stasis runs as uid ${c.uids[1]}${c.eff ? ` and the programs it starts have ${capNames(c.eff)}` : ' and the programs it starts have no capabilities'}`;
}

/**
 * Re-creating tasks under their pids (clone3 set_tid, in the stub and the
 * restored tasks) needs CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN over the
 * pid namespace: in the effective set of what we start, and in a user
 * namespace that owns our pid namespace.
 */
export function checkRestorer(from: Creds): void {
  if (!(from.eff & ((1n << BigInt(CAP.CHECKPOINT_RESTORE)) | (1n << BigInt(CAP.SYS_ADMIN))))) {
    throw new StasisError(ErrorCodes.NOT_PERMITTED, `restoring processes under their own pids needs CAP_CHECKPOINT_RESTORE (or CAP_SYS_ADMIN); ${who(from)}: run it as root, or give it CAP_CHECKPOINT_RESTORE as an ambient capability (setpriv --inh-caps +checkpoint_restore --ambient-caps +checkpoint_restore)`);
  }
  const pidns = fs.openSync('/proc/self/ns/pid_for_children', O.RDONLY);
  try {
    const owner = sysTry('ioctl', pidns, NS_GET_USERNS);
    if (owner < 0) {
      throw new StasisError(ErrorCodes.NOT_PERMITTED, `stasis's pid namespace belongs to a user namespace above its own (${errnoName(-owner)}): its capabilities do not reach it, so pids cannot be chosen; restore from the user namespace that owns the pid namespace`);
    }
    const mine = fs.statSync('/proc/self/ns/user').ino;
    const theirs = fs.fstatSync(owner).ino;
    fs.closeSync(owner);
    if (mine !== theirs) throw new StasisError(ErrorCodes.NOT_PERMITTED, 'stasis\'s pid namespace belongs to another user namespace than its own: pids cannot be chosen there');
  } finally {
    fs.closeSync(pidns);
  }
}

function validate(ld: Loading, l: Loaded): void {
  const from = restorerCreds();
  checkRestorer(from);
  const last = capLastCap();
  for (const p of ld.processes) {
    const d = ld.loaded(memoryUnit).get(p.pid)?.mm.dumpable;
    if (d !== undefined && d !== 0 && d !== 1) {
      throw new StasisError(ErrorCodes.UNSUPPORTED, `${ld.images.path(`mm-${p.pid}.img`)}: dumpable ${d} cannot be set again (prctl takes 0 or 1)`);
    }
    for (const th of p.threads) {
      const want = l.get(th.tid)!;
      if (want.bnd & ~allCaps(last) || want.prm & ~allCaps(last)) {
        throw new StasisError(ErrorCodes.UNSUPPORTED, `thread ${th.tid} of pid ${p.pid}: capabilities above ${last} (this kernel's last) in its image`);
      }
      const why = credsCheck(from, want, last);
      if (why) {
        throw new StasisError(ErrorCodes.NOT_PERMITTED, `cannot restore the credentials of ${th.tid === p.pid ? `pid ${p.pid}` : `thread ${th.tid} of pid ${p.pid}`} (uid ${want.uids[1]}): ${why}; ${who(from)}`);
      }
    }
  }
}

// ---- restore

/** What the kernel shows for the thread `t` drives (t.pid: its id in our pid namespace). */
function liveCreds(t: RemoteTask): Creds {
  return credsFromStatus(readStatus(t.pid), t.callNum('prctl', PR.GET_SECUREBITS, 0, 0, 0, 0));
}

function capData(eff: bigint, prm: bigint, inh: bigint): Buffer {
  const word = (v: bigint, i: number) => Number((v >> BigInt(32 * i)) & 0xffffffffn);
  return Buffer.concat([0, 1].map((i) => CAP_DATA.encode({ effective: word(eff, i), permitted: word(prm, i), inheritable: word(inh, i) })));
}

function runStep(t: RemoteTask, s: CredStep): void {
  switch (s.op) {
    case 'setgroups': {
      const b = Buffer.alloc(4 * s.groups.length);
      s.groups.forEach((g, i) => b.writeUInt32LE(g, 4 * i));
      t.call('setgroups', s.groups.length, inBuf(b));
      return;
    }
    case 'securebits': t.call('prctl', PR.SET_SECUREBITS, s.value, 0, 0, 0); return;
    case 'setresgid': case 'setresuid': t.call(s.op, ...s.ids); return;
    // These return the previous id and never fail: the final comparison catches a refusal.
    case 'setfsgid': case 'setfsuid': t.call(s.op, s.id); return;
    case 'capset':
      t.call('capset', inBuf(CAP_HEADER.encode({ version: LINUX_CAPABILITY_VERSION_3, pid: 0 })), inBuf(capData(s.eff, s.prm, s.inh)));
      return;
    case 'ambient-clear': t.call('prctl', PR.CAP_AMBIENT, PR_CAP_AMBIENT.CLEAR_ALL, 0, 0, 0); return;
    case 'ambient-raise': t.call('prctl', PR.CAP_AMBIENT, PR_CAP_AMBIENT.RAISE, s.cap, 0, 0); return;
    case 'bounding-drop': t.call('prctl', PR.CAPBSET_DROP, s.cap, 0, 0, 0); return;
    case 'no-new-privs': t.call('prctl', PR.SET_NO_NEW_PRIVS, 1, 0, 0, 0); return;
  }
}

/** One thread from the credentials it has to `want`, then checked against what the kernel shows. */
function restoreThreadCreds(t: RemoteTask, tid: number, want: Creds, last: number): void {
  for (const s of credsPlan(liveCreds(t), want, last)) {
    try {
      runStep(t, s);
    } catch (e) {
      throw new StasisError(ErrorCodes.RESTORE_FAILED, `thread ${tid}: ${s.op}${'cap' in s ? ` ${s.cap}` : ''}: ${(e as Error).message}`, { cause: e });
    }
  }
  const left = credsDiff(liveCreds(t), want);
  if (left.length) throw new StasisError(ErrorCodes.RESTORE_FAILED, `thread ${tid}: credentials differ from the image after restoring them: ${left.join(', ')}`);
}

/**
 * Every thread's credentials; then what a credentials change resets in the
 * kernel (commit_creds): each thread's parent-death signal, and the mm's
 * dumpable flag — 1 until the very end (restoreDumpableLast), so that the
 * last steps may still read and write the task.
 */
function restoreCreds(ctx: RestoreCtx, tr: TaskRestore, l: Loaded): void {
  const last = capLastCap();
  for (const th of tr.img.threads) {
    const t = tr.threads.get(th.tid)!;
    restoreThreadCreds(t, th.tid, l.get(th.tid)!, last);
    const sig = th.core.thread_core?.pdeath_sig;
    if (sig) t.call('prctl', PR.SET_PDEATHSIG, sig, 0, 0, 0);
  }
  const dumpable = ctx.loaded(memoryUnit).get(tr.img.pid)?.mm.dumpable;
  if (dumpable !== undefined && tr.task.callNum('prctl', PR.GET_DUMPABLE, 0, 0, 0, 0) !== 1) tr.task.call('prctl', PR.SET_DUMPABLE, 1, 0, 0, 0);
}

/**
 * The finish's last remote call, after the trampoline is gone: a task that
 * is not dumpable cannot be read or written by a tracer without
 * CAP_SYS_PTRACE, so that flag goes last.
 */
export function restoreDumpableLast(ctx: RestoreCtx, tr: TaskRestore, last: RemoteTask): void {
  const dumpable = ctx.loaded(memoryUnit).get(tr.img.pid)?.mm.dumpable;
  if (dumpable === 0) last.call('prctl', PR.SET_DUMPABLE, 0, 0, 0, 0);
}

/** The LSM label of a task (AppArmor profile, SELinux context), or undefined without an LSM that has one. */
function lsmLabel(path: string): string | undefined {
  try { return fs.readFileSync(path, 'utf8').replace(/\0/g, '').trim(); } catch { return undefined; }
}

export const credsUnit = defineUnit<undefined, Loaded>({
  name: 'creds',
  parasiteThreadCalls(_ctx, pd, tid) {
    // Labels are not carried (lsmtype NO_LSM): a restored task gets stasis's.
    const label = lsmLabel(`/proc/${tid}/attr/current`);
    const ours = lsmLabel('/proc/self/attr/current');
    if (label !== undefined && label !== ours) {
      throw new StasisError(ErrorCodes.UNSUPPORTED, `thread ${tid} of pid ${pd.pid} runs under the LSM label '${label}', stasis under '${ours ?? ''}'; LSM labels are not carried: not supported`);
    }
    return {
      calls: [['prctl', PR.GET_SECUREBITS, 0, 0, 0, 0]],
      done: ([r]) => {
        const secbits = Number(remoteResult(r, 'prctl', `PR_GET_SECUREBITS in thread ${tid}`));
        pd.core.get(tid)!.thread_core!.creds = credsEntry(tid === pd.pid ? pd.status : readStatus(tid), secbits);
      },
    };
  },
  loadAfter: ['memory'],
  load,
  validate,
  // Last: every other phase may need the privileges this one gives up.
  restorePhases: [{ name: 'creds', afterAll: true, after: ['sched'], each: (ctx, tr, l) => restoreCreds(ctx, tr, l) }],
});
