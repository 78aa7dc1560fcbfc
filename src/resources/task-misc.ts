// Per-process attributes outside memory and credentials: the audit
// loginuid and oom_score_adj (dumped by core.ts into task_core_entry),
// membarrier registrations (task_core_entry.membarrier_registration_mask,
// CRIU's), and what the memory unit's image cannot say (a THP mode other
// than on/off, dumpable 2) refused at dump.
import * as fs from 'node:fs';
import { childProcess } from '../node-lazy';
import { abi, sysTry, prctl } from '../sys';
import { inBuf, type RemoteTask } from '../compel/remote';
import type { ProcessDump } from '../unit/dump-ctx';
import { readStatus } from '../proc/proc';
import { StasisError, ErrorCodes, errnoName, remoteResult } from '../errors';
import { defineUnit } from '../unit/unit';
import type { Loading } from '../unit/checkpoint';
import type { TaskRestore } from '../unit/restore-ctx';
import { restorerCreds } from './creds';
import { memoryUnit } from './memory';

const { PR, PR_THP_DISABLE_EXCEPT_ADVISED, MEMBARRIER_CMD, ERRNO, O, CAP, AUDIT_UID_UNSET } = abi;

/** The registrations of this process's mm (the REGISTER_* bits), from inside it. */
function membarrierRegistrations(call: (cmd: number) => number): number {
  const r = call(MEMBARRIER_CMD.GET_REGISTRATIONS);
  if (r >= 0) return r;
  if (r !== -ERRNO.EINVAL && r !== -ERRNO.ENOSYS) throw new StasisError(ErrorCodes.PARASITE, `membarrier(GET_REGISTRATIONS): ${errnoName(-r)}`);
  // Before 6.3: a private barrier succeeds only when registered for it
  // (CRIU's way; a global registration cannot be seen like that).
  let mask = 0;
  for (const cmd of [MEMBARRIER_CMD.PRIVATE_EXPEDITED, MEMBARRIER_CMD.PRIVATE_EXPEDITED_SYNC_CORE, MEMBARRIER_CMD.PRIVATE_EXPEDITED_RSEQ]) {
    if (call(cmd) === 0) mask |= cmd << 1;
  }
  return mask;
}

function readProcNum(path: string): number | undefined {
  try { return Number(fs.readFileSync(path, 'utf8').trim()); } catch { return undefined; }
}

function capEff(): bigint {
  return BigInt('0x' + (readStatus(process.pid).get('CapEff') ?? '0'));
}

/**
 * Can a process started by stasis (restored tasks inherit its
 * oom_score_adj_min) be given `v`? Below that minimum it takes
 * CAP_SYS_RESOURCE; the minimum is not shown anywhere, so ask such a process.
 */
function oomSettable(v: number): boolean {
  if (capEff() & (1n << BigInt(CAP.SYS_RESOURCE))) return true;
  const own = readProcNum('/proc/self/oom_score_adj') ?? 0;
  if (v >= own) return true;
  const r = childProcess().spawnSync('/bin/sh', ['-c', `echo ${v} > /proc/self/oom_score_adj`], { stdio: 'ignore' });
  return r.status === 0;
}

function validate(ld: Loading): void {
  const ownLoginuid = readProcNum('/proc/self/loginuid');
  const supported = sysTry('membarrier', MEMBARRIER_CMD.QUERY, 0, 0);
  for (const p of ld.processes) {
    const tc = p.threads[0].core.tc!;
    const oom = tc.oom_score_adj;
    if (oom !== undefined && (oom < -1000 || oom > 1000)) throw new StasisError(ErrorCodes.BAD_IMAGE, `${ld.images.path(`core-${p.pid}.img`)}: oom_score_adj ${oom} out of range`);
    if (oom !== undefined && !oomSettable(oom)) {
      throw new StasisError(ErrorCodes.NOT_PERMITTED, `cannot restore oom_score_adj ${oom} of pid ${p.pid}: below stasis's own (${readProcNum('/proc/self/oom_score_adj')}) it needs CAP_SYS_RESOURCE`);
    }
    const luid = tc.loginuid;
    if (luid !== undefined && luid !== ownLoginuid) {
      if (ownLoginuid === undefined) throw new StasisError(ErrorCodes.UNSUPPORTED, `cannot restore loginuid ${luid} of pid ${p.pid}: no /proc/self/loginuid here (kernel without audit)`);
      // Only an unset loginuid may be set without privilege.
      if (ownLoginuid !== AUDIT_UID_UNSET && !(restorerCreds().eff & (1n << BigInt(CAP.AUDIT_CONTROL)))) {
        throw new StasisError(ErrorCodes.NOT_PERMITTED, `cannot restore loginuid ${luid} of pid ${p.pid}: stasis's is ${ownLoginuid}, and changing a set loginuid needs CAP_AUDIT_CONTROL`);
      }
    }
    const mb = tc.membarrier_registration_mask ?? 0;
    if (mb && (supported < 0 || (mb & ~supported))) {
      throw new StasisError(ErrorCodes.UNSUPPORTED, `cannot restore membarrier registrations 0x${mb.toString(16)} of pid ${p.pid}: this kernel supports 0x${Math.max(supported, 0).toString(16)}`);
    }
  }
}

/** Writable only by the task itself, through /proc/self. */
function restoreLoginuid(tr: TaskRestore): void {
  const luid = tr.img.threads[0].core.tc?.loginuid;
  if (luid === undefined || luid === readProcNum(`/proc/${tr.task.pid}/loginuid`)) return;
  const t = tr.task;
  const fd = t.open('/proc/self/loginuid', O.WRONLY);
  try {
    const text = Buffer.from(String(luid));
    t.call('write', fd, inBuf(text), text.length);
  } finally {
    t.call('close', fd);
  }
}

/** What the task told (task-misc's declared calls: THP switch, dumpable, membarrier registrations), checked and kept. */
function taskMiscFacts(pd: ProcessDump, t: RemoteTask, rs: bigint[]): void {
  const [thp, dumpable] = rs.slice(0, 2).map((r, i) => Number(remoteResult(r, 'prctl', `${i ? 'GET_DUMPABLE' : 'GET_THP_DISABLE'} in task ${t.pid}`)));
  if (thp & PR_THP_DISABLE_EXCEPT_ADVISED) {
    throw new StasisError(ErrorCodes.UNSUPPORTED, `pid ${pd.pid} disabled transparent huge pages except where advised (PR_THP_DISABLE_EXCEPT_ADVISED); images only carry on/off: not supported`);
  }
  if (dumpable !== 0 && dumpable !== 1) {
    throw new StasisError(ErrorCodes.UNSUPPORTED, `pid ${pd.pid} has dumpable ${dumpable} (fs.suid_dumpable after a credentials change), which cannot be set again: not supported`);
  }
  const mask = membarrierRegistrations((cmd) => Number(cmd === MEMBARRIER_CMD.GET_REGISTRATIONS ? rs[2] : t.callRaw('membarrier', cmd, 0, 0)));
  if (mask) pd.core.get(pd.pid)!.tc!.membarrier_registration_mask = mask;
}

export const taskMiscUnit = defineUnit({
  name: 'task-misc',
  parasiteCalls: (_ctx, pd) => ({
    // membarrier's answer may be an error, looked at below.
    calls: [['prctl', PR.GET_THP_DISABLE, 0, 0, 0, 0], ['prctl', PR.GET_DUMPABLE, 0, 0, 0, 0], ['membarrier', MEMBARRIER_CMD.GET_REGISTRATIONS, 0, 0]],
    done: (rs, t) => taskMiscFacts(pd, t, rs),
  }),
  loadAfter: ['memory'],
  validate,
  restorePhases: [
    // The root's before its mount namespace is rebuilt (only the /proc we see
    // is sure to be there), and before it forks: its children inherit it.
    { name: 'loginuid-root', stage: 'root', before: ['mnt'], each: (_ctx, tr) => restoreLoginuid(tr) },
    // The others' (when theirs differ): in the leader before its threads exist
    // (they inherit it), and before 'fs' may chroot away from /proc.
    { name: 'loginuid', before: ['threads', 'fs'], each: (_ctx, tr) => restoreLoginuid(tr) },
    {
      name: 'oom-score-adj',
      each(_ctx, tr) {
        const v = tr.img.threads[0].core.tc?.oom_score_adj;
        const path = `/proc/${tr.task.pid}/oom_score_adj`;
        if (v !== undefined && v !== readProcNum(path)) fs.writeFileSync(path, String(v));
      },
    },
    // Registrations belong to the mm; a THP setting inherited from stasis must not stay.
    {
      name: 'mm-flags', after: ['threads', 'mm'],
      each(ctx, tr) {
        const mask = tr.img.threads[0].core.tc?.membarrier_registration_mask ?? 0;
        for (let bit = 1; bit <= mask; bit <<= 1) if (mask & bit) tr.task.call('membarrier', bit, 0, 0);
        const off = ctx.loaded(memoryUnit).get(tr.img.pid)?.mm.thp_disabled ?? false;
        if (!off && prctl(PR.GET_THP_DISABLE) !== 0) tr.task.call('prctl', PR.SET_THP_DISABLE, 0, 0, 0, 0);
      },
    },
  ],
});
