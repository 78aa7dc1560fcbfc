// The model of the kernel's credential rules that plans a restore's
// credential calls and refuses, before anything exists, what cannot be done.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { credsPlan, credsCheck, applyStep, credsDiff, type Creds } from '../../src/resources/creds-rules';
import { abi } from '../../src/sys';

const LAST = 40;
const { CAP, SECBIT } = abi;
const bit = (c: number) => 1n << BigInt(c);
const FULL = (1n << 41n) - 1n & ~bit(CAP.SYS_RESOURCE);
const ROOT: Creds = { uids: [0, 0, 0, 0], gids: [0, 0, 0, 0], groups: [], inh: 0n, prm: FULL, eff: FULL, bnd: FULL, amb: 0n, secbits: 0, nnp: false };
const NOBODY: Creds = {
  uids: [65534, 65534, 65534, 65534], gids: [65534, 65534, 65534, 65534], groups: [1, 2, 3],
  inh: bit(10) | bit(25), prm: bit(0) | bit(5) | bit(10), eff: bit(5) | bit(10), bnd: FULL & ~(bit(16) | bit(17) | bit(25)),
  amb: bit(10), secbits: SECBIT.NOROOT | SECBIT.NOROOT_LOCKED | SECBIT.NO_CAP_AMBIENT_RAISE, nnp: true,
};

function run(from: Creds, want: Creds): Creds {
  let c = from;
  for (const s of credsPlan(from, want, LAST)) {
    const r = applyStep(c, s);
    assert.equal(typeof r, 'object', `${s.op}: ${String(r)}`);
    c = r as Creds;
  }
  return c;
}

test('root to a confined uid 65534: every call in an order that keeps what the next one needs', () => {
  assert.deepEqual(credsDiff(run(ROOT, NOBODY), NOBODY), []);
  const ops = credsPlan(ROOT, NOBODY, LAST).map((s) => s.op);
  // Inheritable (SYS_TIME, soon outside the bounding set) before the bounding drops;
  // the ambient raise before NO_CAP_AMBIENT_RAISE; securebits while CAP_SETPCAP is effective.
  assert.deepEqual(ops, ['setgroups', 'securebits', 'setresgid', 'setresuid', 'capset', 'ambient-raise',
    'bounding-drop', 'bounding-drop', 'bounding-drop', 'securebits', 'capset', 'no-new-privs']);
  assert.equal(credsCheck(ROOT, NOBODY, LAST), undefined);
});

test('nothing to do when the credentials are already right (an unprivileged restore of its own process)', () => {
  assert.deepEqual(credsPlan(NOBODY, NOBODY, LAST), []);
});

test('what the kernel refuses is named', () => {
  const user: Creds = { ...ROOT, uids: [1000, 1000, 1000, 1000], gids: [1000, 1000, 1000, 1000], prm: bit(CAP.CHECKPOINT_RESTORE), eff: bit(CAP.CHECKPOINT_RESTORE), amb: bit(CAP.CHECKPOINT_RESTORE), inh: bit(CAP.CHECKPOINT_RESTORE), bnd: FULL };
  assert.equal(credsCheck(user, { ...user, groups: [4] }, LAST), 'supplementary groups [4] needs CAP_SETGID');
  assert.equal(credsCheck(user, { ...user, groups: [], uids: [0, 0, 0, 0] }, LAST), 'uids 0/0/0 needs CAP_SETUID');
  assert.equal(credsCheck(user, { ...user, prm: bit(CAP.CHECKPOINT_RESTORE) | bit(CAP.KILL), eff: 0n, amb: 0n }, LAST),
    'permitted CAP_KILL: more than the restore has (CAP_CHECKPOINT_RESTORE)');
  assert.equal(credsCheck(user, { ...user, bnd: FULL & ~bit(CAP.SYS_MODULE) }, LAST), 'dropping CAP_SYS_MODULE from the bounding set needs CAP_SETPCAP');
  assert.match(credsCheck(ROOT, { ...ROOT, bnd: FULL | bit(CAP.SYS_RESOURCE) }, LAST)!, /^bounding set has CAP_SYS_RESOURCE, which the restore's bounding set lacks/);
  assert.match(credsCheck({ ...ROOT, nnp: true }, ROOT, LAST)!, /^no_new_privs is 0 in the image but set for the restore/);
  assert.match(credsCheck({ ...ROOT, secbits: SECBIT.KEEP_CAPS | SECBIT.KEEP_CAPS_LOCKED }, ROOT, LAST)!, /locked bits that differ/);
  // Dropping privileges one's own restore has is always possible.
  assert.equal(credsCheck(user, { ...user, prm: 0n, eff: 0n, amb: 0n, inh: 0n }, LAST), undefined);
});

test('uid changes from root without NO_SETUID_FIXUP would lose the capabilities: the plan guards them', () => {
  const want: Creds = { ...ROOT, uids: [1000, 1001, 1002, 1002], gids: [2000, 2001, 2002, 2002], prm: 0n, eff: 0n, bnd: FULL & ~bit(CAP.SYS_MODULE) };
  const plan = credsPlan(ROOT, want, LAST);
  assert.deepEqual(plan[0], { op: 'securebits', value: SECBIT.NO_SETUID_FIXUP });
  assert.deepEqual(credsDiff(run(ROOT, want), want), []);
  // fsuid equal to the saved uid: set after setresuid made it the effective one.
  assert.ok(plan.some((s) => s.op === 'setfsuid' && s.id === 1002));
});
