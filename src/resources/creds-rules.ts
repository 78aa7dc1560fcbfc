// The kernel's rules for changing a thread's own credentials, as a model:
// `credsPlan` lists the calls that take a thread from the credentials it has
// to the ones it should have, in an order where each call still holds the
// privilege it needs (the last ones give it up); `credsCheck` runs that plan
// on the model and names the first call the kernel would refuse, and why.
// The restore validates with it before creating anything (from the
// credentials its tasks will start with), then runs the same plan in each
// thread. Pure: no system calls here.
import { abi } from '../sys';

const { CAP, CAP_NAMES, SECBIT, SECBIT_ALL_LOCKS } = abi;

/** A thread's credentials; capability sets as 64-bit masks. */
export interface Creds {
  /** real, effective, saved, fs */
  uids: [number, number, number, number];
  gids: [number, number, number, number];
  groups: number[];
  inh: bigint; prm: bigint; eff: bigint; bnd: bigint; amb: bigint;
  secbits: number;
  nnp: boolean;
}

export type CredStep =
  | { op: 'setgroups'; groups: number[] }
  | { op: 'securebits'; value: number }
  | { op: 'setresgid' | 'setresuid'; ids: [number, number, number] }
  | { op: 'setfsgid' | 'setfsuid'; id: number }
  | { op: 'capset'; eff: bigint; prm: bigint; inh: bigint }
  | { op: 'ambient-clear' }
  | { op: 'ambient-raise'; cap: number }
  | { op: 'bounding-drop'; cap: number }
  | { op: 'no-new-privs' };

const bit = (cap: number) => 1n << BigInt(cap);
const has = (set: bigint, cap: number) => (set & bit(cap)) !== 0n;
const sameIds = (a: readonly number[], b: readonly number[]) => a.length === b.length && a.every((x, i) => x === b[i]);

/** "CAP_CHOWN, CAP_KILL" */
export function capNames(set: bigint): string {
  const out: string[] = [];
  for (let c = 0; c < 64; c++) if (has(set, c)) out.push(`CAP_${CAP_NAMES[c] ?? c}`);
  return out.length ? out.join(', ') : 'none';
}

/** Every capability number 0..last. */
export function allCaps(last: number): bigint {
  return (1n << BigInt(last + 1)) - 1n;
}

/**
 * The calls from `cur` to `want`, each only when something changes:
 * groups, then (keeping capabilities across the uid change with
 * SECBIT_NO_SETUID_FIXUP) gids and uids; the inheritable set while the
 * bounding set is still whole; ambient capabilities; bounding set drops and
 * the final securebits while CAP_SETPCAP is still effective; then the final
 * capset, which may drop it; no_new_privs last (irreversible).
 */
export function credsPlan(cur: Creds, want: Creds, capLast: number): CredStep[] {
  const steps: CredStep[] = [];
  if (!sameIds(cur.groups, want.groups)) steps.push({ op: 'setgroups', groups: want.groups });
  const xids = !sameIds(cur.uids, want.uids) || !sameIds(cur.gids, want.gids);
  let secbits = cur.secbits;
  // Leaving uid 0 would clear the capability sets the next calls need.
  if (xids && cur.prm !== 0n && cur.uids.includes(0) && !(secbits & SECBIT.NO_SETUID_FIXUP)) {
    secbits |= SECBIT.NO_SETUID_FIXUP;
    steps.push({ op: 'securebits', value: secbits });
  }
  // setresXid also sets the fs id to the effective one.
  const resgid = !sameIds(cur.gids.slice(0, 3), want.gids.slice(0, 3));
  if (resgid) steps.push({ op: 'setresgid', ids: [want.gids[0], want.gids[1], want.gids[2]] });
  if ((resgid ? want.gids[1] : cur.gids[3]) !== want.gids[3]) steps.push({ op: 'setfsgid', id: want.gids[3] });
  const resuid = !sameIds(cur.uids.slice(0, 3), want.uids.slice(0, 3));
  if (resuid) steps.push({ op: 'setresuid', ids: [want.uids[0], want.uids[1], want.uids[2]] });
  if ((resuid ? want.uids[1] : cur.uids[3]) !== want.uids[3]) steps.push({ op: 'setfsuid', id: want.uids[3] });
  if (cur.inh !== want.inh) steps.push({ op: 'capset', eff: cur.eff, prm: cur.prm, inh: want.inh });
  // capset has already dropped ambient capabilities outside the new inheritable set.
  const ambLeft = cur.amb & cur.prm & want.inh;
  if (ambLeft & ~want.amb) steps.push({ op: 'ambient-clear' });
  const ambNow = ambLeft & ~want.amb ? 0n : ambLeft;
  for (let c = 0; c <= capLast; c++) if (has(want.amb, c) && !has(ambNow, c)) steps.push({ op: 'ambient-raise', cap: c });
  for (let c = 0; c <= capLast; c++) if (has(cur.bnd, c) && !has(want.bnd, c)) steps.push({ op: 'bounding-drop', cap: c });
  if (secbits !== want.secbits) steps.push({ op: 'securebits', value: want.secbits });
  if (cur.eff !== want.eff || cur.prm !== want.prm) steps.push({ op: 'capset', eff: want.eff, prm: want.prm, inh: want.inh });
  if (want.nnp && !cur.nnp) steps.push({ op: 'no-new-privs' });
  return steps;
}

/** One call on the model: the credentials after it, or why the kernel refuses it. */
export function applyStep(c: Creds, s: CredStep): Creds | string {
  const can = (cap: number) => has(c.eff, cap);
  const need = (cap: number, what: string) => `${what} needs CAP_${CAP_NAMES[cap]}`;
  switch (s.op) {
    case 'setgroups':
      return can(CAP.SETGID) ? { ...c, groups: [...s.groups] } : need(CAP.SETGID, `supplementary groups [${s.groups.join(', ')}]`);
    case 'securebits': {
      const locked = (c.secbits & SECBIT_ALL_LOCKS) >> 1;
      if (!can(CAP.SETPCAP)) return need(CAP.SETPCAP, `securebits 0x${s.value.toString(16)}`);
      if ((locked & (c.secbits ^ s.value)) || (c.secbits & SECBIT_ALL_LOCKS & ~s.value)) {
        return `securebits 0x${s.value.toString(16)}: the restore's own securebits 0x${c.secbits.toString(16)} have locked bits that differ`;
      }
      return { ...c, secbits: s.value };
    }
    case 'setresgid': case 'setresuid': {
      const isUid = s.op === 'setresuid';
      const ids = isUid ? c.uids : c.gids;
      const cap = isUid ? CAP.SETUID : CAP.SETGID;
      if (!can(cap) && !s.ids.every((x) => ids.slice(0, 3).includes(x))) return need(cap, `${isUid ? 'uids' : 'gids'} ${s.ids.join('/')}`);
      const next: [number, number, number, number] = [s.ids[0], s.ids[1], s.ids[2], s.ids[1]];
      return isUid ? fixupSetresuid(c, { ...c, uids: next }) : { ...c, gids: next };
    }
    case 'setfsgid': case 'setfsuid': {
      const isUid = s.op === 'setfsuid';
      const ids = isUid ? c.uids : c.gids;
      const cap = isUid ? CAP.SETUID : CAP.SETGID;
      if (!can(cap) && !ids.includes(s.id)) return need(cap, `${isUid ? 'fsuid' : 'fsgid'} ${s.id}`);
      if (!isUid) return { ...c, gids: [c.gids[0], c.gids[1], c.gids[2], s.id] };
      return fixupSetfsuid(c, { ...c, uids: [c.uids[0], c.uids[1], c.uids[2], s.id] });
    }
    case 'capset': {
      const inhLimit = c.inh | (can(CAP.SETPCAP) ? c.bnd : c.prm);
      if (s.inh & ~inhLimit) return `inheritable ${capNames(s.inh & ~inhLimit)}: not in the restore's inheritable, ${can(CAP.SETPCAP) ? 'bounding' : 'permitted'} set`;
      if (s.inh & ~(c.inh | c.bnd)) return `inheritable ${capNames(s.inh & ~(c.inh | c.bnd))}: not in the restore's bounding set`;
      if (s.prm & ~c.prm) return `permitted ${capNames(s.prm & ~c.prm)}: more than the restore has (${capNames(c.prm)})`;
      if (s.eff & ~s.prm) return `effective ${capNames(s.eff & ~s.prm)}: not permitted`;
      return { ...c, eff: s.eff, prm: s.prm, inh: s.inh, amb: c.amb & s.prm & s.inh };
    }
    case 'ambient-clear':
      return { ...c, amb: 0n };
    case 'ambient-raise':
      if (!has(c.prm, s.cap) || !has(c.inh, s.cap)) return `ambient CAP_${CAP_NAMES[s.cap]}: not both permitted and inheritable`;
      if (c.secbits & SECBIT.NO_CAP_AMBIENT_RAISE) return `ambient CAP_${CAP_NAMES[s.cap]}: SECBIT_NO_CAP_AMBIENT_RAISE is set`;
      return { ...c, amb: c.amb | bit(s.cap) };
    case 'bounding-drop':
      return can(CAP.SETPCAP) ? { ...c, bnd: c.bnd & ~bit(s.cap) } : need(CAP.SETPCAP, `dropping CAP_${CAP_NAMES[s.cap]} from the bounding set`);
    case 'no-new-privs':
      return { ...c, nnp: true };
  }
}

/** CAP_FS_SET: what an fsuid change away from or back to 0 takes from or gives to the effective set. */
const FS_SET = bit(CAP.CHOWN) | bit(CAP.DAC_OVERRIDE) | bit(CAP.DAC_READ_SEARCH) | bit(CAP.FOWNER) | bit(CAP.FSETID) |
  bit(CAP.LINUX_IMMUTABLE) | bit(CAP.MAC_OVERRIDE);

/** setresuid's effect on the capability sets (cap_emulate_setxuid), unless NO_SETUID_FIXUP. */
function fixupSetresuid(old: Creds, c: Creds): Creds {
  if (old.secbits & SECBIT.NO_SETUID_FIXUP) return c;
  const out = { ...c };
  if (old.uids.slice(0, 3).includes(0) && !c.uids.slice(0, 3).includes(0)) {
    if (!(old.secbits & SECBIT.KEEP_CAPS)) { out.prm = 0n; out.eff = 0n; }
    out.amb = 0n;
  }
  if (old.uids[1] === 0 && c.uids[1] !== 0) out.eff = 0n;
  if (old.uids[1] !== 0 && c.uids[1] === 0) out.eff = out.prm;
  return out;
}

/** setfsuid's effect on the effective set, unless NO_SETUID_FIXUP. */
function fixupSetfsuid(old: Creds, c: Creds): Creds {
  if (old.secbits & SECBIT.NO_SETUID_FIXUP) return c;
  if (old.uids[3] === 0 && c.uids[3] !== 0) return { ...c, eff: c.eff & ~FS_SET };
  if (old.uids[3] !== 0 && c.uids[3] === 0) return { ...c, eff: c.eff | (c.prm & FS_SET) };
  return c;
}

/** Fields of `a` and `b` that differ, for messages ("uids 0/0/0/0 → 65534/...") . */
export function credsDiff(a: Creds, b: Creds): string[] {
  const out: string[] = [];
  const ids = (x: readonly number[]) => x.join('/');
  if (!sameIds(a.uids, b.uids)) out.push(`uids ${ids(a.uids)} → ${ids(b.uids)}`);
  if (!sameIds(a.gids, b.gids)) out.push(`gids ${ids(a.gids)} → ${ids(b.gids)}`);
  if (!sameIds(a.groups, b.groups)) out.push(`groups [${a.groups.join(',')}] → [${b.groups.join(',')}]`);
  for (const k of ['inh', 'prm', 'eff', 'bnd', 'amb'] as const) if (a[k] !== b[k]) out.push(`${k} ${a[k].toString(16)} → ${b[k].toString(16)}`);
  if (a.secbits !== b.secbits) out.push(`securebits 0x${a.secbits.toString(16)} → 0x${b.secbits.toString(16)}`);
  if (a.nnp !== b.nnp) out.push(`no_new_privs ${+a.nnp} → ${+b.nnp}`);
  return out;
}

/**
 * Why `want` cannot be reached from `from`, or undefined if it can: what
 * the kernel never gives back (a bounding capability, no_new_privs), then
 * the first call of the plan that would be refused.
 */
export function credsCheck(from: Creds, want: Creds, capLast: number): string | undefined {
  if (want.bnd & ~from.bnd) return `bounding set has ${capNames(want.bnd & ~from.bnd)}, which the restore's bounding set lacks (it can only shrink)`;
  if (from.nnp && !want.nnp) return 'no_new_privs is 0 in the image but set for the restore (it can never be cleared)';
  let c: Creds = from;
  for (const s of credsPlan(from, want, capLast)) {
    const r = applyStep(c, s);
    if (typeof r === 'string') return r;
    c = r;
  }
  const left = credsDiff(c, want);
  return left.length ? `not reachable: ${left.join(', ')}` : undefined;
}
