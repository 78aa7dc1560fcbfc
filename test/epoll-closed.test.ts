// epoll targets added under fd numbers since closed (their files still open
// under other numbers of the process), and several under one number: each is
// found with kcmp(KCMP_EPOLL_TFD) and restored under the fd that holds its
// file, so every event comes back with its data. A target open nowhere in the
// process, or one file under a closed and a live number, is refused at dump.
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Fixture, initHarness, tmpDir, runStasis, waitFor, tracerPid } from './harness';
import { readImage } from '../src/images/image';
import { dumpKillRestore, assertOneLineError } from './net-helpers';

let root: string;
before(() => { initHarness(); root = tmpDir('epollclosed'); });
after(() => fs.rmSync(root, { recursive: true, force: true }));

test('epoll targets added as fds since closed or reused: saved under the fds holding their files, events and data as they were after restore', async () => {
  const fx = await Fixture.start('epollclosed', { extraFds: true });
  try {
    const dir = path.join(root, 'images');
    await dumpKillRestore(fx, dir);
    const ep = readImage(dir, 'files.img', 'FILES', 'file_entry').find((f) => f.epfd)!.epfd!;
    const fds = readImage(dir, `fdinfo-${readImage(dir, `ids-${fx.pid}.img`, 'IDS', 'task_kobj_ids_entry')[0].files_id}.img`, 'FDINFO', 'fdinfo_entry');
    const tfds = [...ep.tfd!].sort((x, y) => Number(x.data - y.data));
    assert.deepEqual(tfds.map((t) => t.data), [0n, 1n, 2n, 3n, 4n]);
    // Pipe 3 still at 702; the others at their read ends (open fds of the process, none 700).
    assert.equal(tfds[3].tfd, 702);
    for (const t of tfds) assert.ok(fds.some((f) => f.fd === t.tfd), `tfd ${t.tfd} is an fd of the process`);
    assert.equal(new Set(tfds.map((t) => t.tfd)).size, 5);
    const { log } = await fx.terminate();
    assert.match(log, /^PASS$/m, log);
  } finally {
    await fx.kill();
  }
});

for (const [mode, re] of [
  ['elsewhere', (pid: number) => new RegExp(`^stasis: epoll fd \\d+ of pid ${pid} watches a file no longer open as fd 700 nor as any other fd of the process; not supported$`)],
  ['twice', (pid: number) => new RegExp(`^stasis: epoll fd \\d+ of pid ${pid} watches the file of fd \\d+ under two fd numbers, one since closed; not supported$`)],
] as const) {
  test(`refused: an epoll target ${mode === 'elsewhere' ? 'open only in another process' : 'added under a live and a closed fd number'}; the process runs on`, async () => {
    const fx = await Fixture.start('epollclosed', { args: [mode], extraFds: true });
    try {
      const dir = path.join(root, `refused-${mode}`);
      const r = runStasis(['dump', '-t', String(fx.pid), '-D', dir]);
      assertOneLineError(r, re(fx.pid));
      assert.ok(!fs.existsSync(path.join(dir, 'inventory.img')), 'no checkpoint');
      await waitFor('untraced', () => tracerPid(fx.pid) === 0, 2000, 5);
      const { log } = await fx.terminate();
      assert.match(log, /^PASS$/m, log);
    } finally {
      await fx.kill();
    }
  });
}
