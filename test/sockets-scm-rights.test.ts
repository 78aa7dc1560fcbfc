// Files in flight (fixtures/scm-rights.c): fds passed with SCM_RIGHTS on
// stream, seqpacket and datagram unix socketpairs and not yet received, the
// process holding none of them. Dumped as file entries no fd names, listed by
// their message (sk_packet_entry.scm); restored and sent again so each
// message, its boundaries and its fds are as they were.
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Fixture, initHarness, tmpDir } from './harness';
import { readImage } from '../src/images/image';
import { readWithPayloads } from './harness';
import { dumpKillRestore } from './net-helpers';

let root: string;
before(() => { initHarness(); root = tmpDir('scmr'); });
after(() => fs.rmSync(root, { recursive: true, force: true }));

test('a pipe, a file at an offset and a socket with queued data in flight on three kinds of unix sockets: dump → restore → PASS', async () => {
  const fx = await Fixture.start('scm-rights', { extraFds: true });
  try {
    const dir = path.join(root, 'img');
    await dumpKillRestore(fx, dir);
    const files = readImage(dir, 'files.img', 'FILES', 'file_entry');
    const queued = readWithPayloads(dir, 'sk-queues.img', 'SK_QUEUES', 'sk_packet_entry', (e) => e.length);
    const kinds = (ids: number[]) => ids.map((id) => Object.keys(files.find((f) => f.id === id)!).find((k) => !['id', 'type'].includes(k)));
    // Each socket's queue in order: its messages with the kinds of the files they carry.
    const bySocket = new Map<number, unknown[]>();
    for (const e of queued) bySocket.set(e.id_for, [...bySocket.get(e.id_for) ?? [], [e.extra.toString(), kinds((e.scm ?? []).flatMap((c) => c.rights ?? []))]]);
    const sorted = (x: unknown[][]) => [...x].sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b)));
    assert.deepEqual(sorted([...bySocket.values()]), sorted([
      [['CD', ['pipe', 'reg']], ['G', ['usk']], ['HI', []]],
      [['abc', []]],
      [['d1', ['pipe']], ['d2', ['reg', 'pipe']]],
      [['q1', ['pipe']], ['q2', []], ['', ['reg']]],
    ]));
    const { log } = await fx.terminate();
    assert.match(log, /^PASS$/m, log);
  } finally {
    await fx.kill();
  }
});
