// The image types are checked by the compiler: a misspelt message or field
// name does not compile. This file is the test: the build fails if any of
// the expected errors below stops being an error.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import type { Msg } from '../../src/images/schema';
import { encode } from '../../src/images/codec';
import { parts } from '../../src/images/image';

test('messages and fields are typed', () => {
  const t: Msg<'timerfd_entry'> = {
    id: 1, flags: 0, fown: { uid: 0, euid: 0, signum: 0, pid_type: 0, pid: 0 }, clockid: 1, ticks: 0n, settime_flags: 0,
    vsec: 0n, vnsec: 0n, isec: 1n, insec: 0n,
  };
  // 64-bit fields are bigint:
  // @ts-expect-error a number is not a bigint
  const bad64: Msg<'timerfd_entry'>['ticks'] = 5;
  // @ts-expect-error misspelt field
  const misspelt: Msg<'timerfd_entry'> = { ...t, tiks: 0n };
  // @ts-expect-error required field missing
  const missing: Msg<'fs_entry'> = { cwd_id: 1 };
  // Never called: only compiled.
  const wrongCalls = () => {
    // @ts-expect-error unknown message
    encode('timerfd_entri', t);
    // @ts-expect-error entry of another message
    parts('fs_entry', [t]);
  };
  const optional: Msg<'fs_entry'> = { cwd_id: 1, root_id: 2 }; // umask is optional
  const repeated: Msg<'pstree_entry'>['threads'] = [1, 2];
  void [bad64, misspelt, missing, optional, repeated, wrongCalls];
  assert.equal(encode('timerfd_entry', t).length > 0, true);
});
