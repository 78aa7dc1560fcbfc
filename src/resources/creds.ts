// Credentials of each thread: uids and gids (real, effective, saved, fs),
// supplementary groups, the five capability sets, securebits and
// no_new_privs, into thread_core.creds.
import { abi } from '../sys';
import { readStatus } from '../proc/proc';
import type { Msg } from '../images/schema';
import { defineUnit } from '../unit/unit';

const { PR } = abi;

function capWords(hex: string | undefined): number[] {
  const v = BigInt('0x' + (hex ?? '0'));
  return [Number(v & 0xffffffffn), Number(v >> 32n)];
}

/** creds_entry from /proc/PID/task/TID/status lines and the thread's securebits. */
export function credsEntry(status: Map<string, string>, secbits: number): Msg<'creds_entry'> {
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

export const credsUnit = defineUnit({
  name: 'creds',
  parasiteThread(_ctx, pd, tid, t) {
    const secbits = t.callNum('prctl', PR.GET_SECUREBITS, 0, 0, 0, 0);
    pd.core.get(tid)!.thread_core!.creds = credsEntry(tid === pd.pid ? pd.status : readStatus(tid), secbits);
  },
});
