// The credentials a restored task starts with (creds.ts restorerCreds):
// computed from ours by the exec rules when we are root (execedCreds), no
// longer read from a started /bin/cat. Checked against the kernel: a shell
// in various credentials prints its own status, then a program it starts
// prints its; the rules applied to the first must give the second exactly,
// and decline where they do not apply.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { execedCreds, startedCreds, credsFromStatus } from '../../src/resources/creds';
import { prctl, abi } from '../../src/sys';

function parse(text: string): Map<string, string> {
  return new Map(text.split('\n').filter((l) => l.includes(':')).map((l) => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 1).trim()] as [string, string]));
}

/** [the shell's status, its child's status], the shell started by `prefix`. */
function shellAndChild(prefix: string[]): [Map<string, string>, Map<string, string>] {
  const r = spawnSync(prefix[0], [...prefix.slice(1), '/bin/sh', '-c', 'cat /proc/$$/status; echo ===; cat /proc/self/status'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const [a, b] = r.stdout.split('===\n');
  return [parse(a), parse(b)];
}

const PY = (code: string) => ['python3', '-c', `import os, sys\n${code}\nos.execv(sys.argv[1], sys.argv[1:])`];

test('as root, the exec rules give what a started program has (bounding set, inheritable, ambient, split gids)', () => {
  const cases: [string, string[]][] = [
    ['plain', ['env']],
    ['smaller bounding set, inheritable and ambient CAP_CHOWN', ['setpriv', '--bounding-set', '-net_raw,-sys_module', '--inh-caps', '+chown,+kill', '--ambient-caps', '+chown', '--']],
    ['real, effective and saved gids differ', PY('os.setresgid(7, 8, 9)')],
    ['groups', ['setpriv', '--groups', '3,5', '--']],
  ];
  for (const [what, prefix] of cases) {
    const [sh, child] = shellAndChild(prefix);
    const got = execedCreds(sh, 0);
    assert.ok(got, `${what}: the rules apply`);
    assert.deepEqual(got, credsFromStatus(child, 0), what);
  }
});

test('the rules decline where they are not that simple', () => {
  const [sh] = shellAndChild(['env']);
  const with_ = (k: string, v: string) => new Map([...sh, [k, v]]);
  assert.equal(execedCreds(with_('Uid', '1000\t1000\t1000\t1000'), 0), undefined, 'not root');
  assert.equal(execedCreds(with_('Uid', '1000\t0\t0\t0'), 0), undefined, 'root only in some uids');
  assert.equal(execedCreds(sh, abi.SECBIT.NOROOT), undefined, 'SECBIT_NOROOT');
  assert.equal(execedCreds(with_('NoNewPrivs', '1'), 0), undefined, 'no_new_privs');
  assert.equal(execedCreds(with_('TracerPid', '42'), 0), undefined, 'traced');
  // KEEP_CAPS does not survive exec; other bits do.
  assert.equal(execedCreds(sh, abi.SECBIT.KEEP_CAPS | abi.SECBIT.NO_SETUID_FIXUP)!.secbits, abi.SECBIT.NO_SETUID_FIXUP);
});

test('this process: computed and started agree', () => {
  const fs = require('node:fs') as typeof import('node:fs');
  const mine = parse(fs.readFileSync('/proc/self/status', 'utf8'));
  const computed = execedCreds(mine, prctl(abi.PR.GET_SECUREBITS));
  if (computed) assert.deepEqual(computed, startedCreds());
  else assert.notEqual(mine.get('Uid'), '0\t0\t0\t0', 'declined only when not root (or traced, NOROOT, no_new_privs)');
});
