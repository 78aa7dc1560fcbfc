// Files with contents or state of their own (fixtures/special.c): a file
// deleted while open (its contents go into ghost-file-N.img and it comes back
// open but deleted), memfd as fd and as mapping (contents, seals, sharing), a
// FIFO with queued bytes, inotify watches with their wd numbers. Also the
// ghost limit: a deleted file over it is refused with a clear error.
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Fixture, initHarness, runStasis, tmpDir, listFds, tracerPid, procState, restoreDetached } from './harness';
import { readImage } from '../src/images/image';
import { readWithPayloads } from './harness';
import { dumpKillRestore, assertOneLineError } from './net-helpers';

let root: string;

before(() => {
  initHarness();
  root = tmpDir('fspecial');
});

after(() => {
  fs.rmSync(root, { recursive: true, force: true });
});

test('deleted file, memfd (fd and mappings), FIFO with data, inotify: dump → restore → PASS', async () => {
  const fx = await Fixture.start('special', { extraFds: true });
  try {
    assert.deepEqual(listFds(fx.pid), ['0', '1', '2', '5', '6', '7', '8', '9']);
    assert.match(fs.readlinkSync(`/proc/${fx.pid}/fd/5`), /ghost \(deleted\)$/);
    assert.match(fx.log(), /^WDS 1 3$/m);
    const dir = path.join(root, 'images');
    // criu's irmap options (zdtm's inotify_irmap passes them to both): accepted, nothing to change.
    const irmap = ['--force-irmap', '--irmap-scan-path', '/'];
    await dumpKillRestore(fx, dir, { dumpArgs: irmap, restoreArgs: irmap });
    // The images say what the test claims.
    const [ghost] = readWithPayloads(dir, 'ghost-file-1.img', 'GHOST_FILE', 'ghost_file_entry', () => -1);
    assert.equal(ghost.extra.toString(), 'deleted-but-open contents');
    assert.equal(ghost.mode & 0o777, 0o640);
    assert.deepEqual(ghost.mtim, { tv_sec: 123456n, tv_usec: 789000n }, 'its mtime, as the fixture set it');
    const memfds = readImage(dir, 'memfd.img', 'MEMFD_INODE', 'memfd_inode_entry');
    assert.deepEqual(memfds.map((m) => m.name).sort(), ['mapped-only', 'stasis-special']);
    const fifo = readWithPayloads(dir, 'fifo-data.img', 'FIFO_DATA', 'pipe_data_entry', (d) => d.bytes);
    assert.equal(fifo[0].extra.toString(), 'fifo-queued-bytes');
    // Restored: the deleted file is deleted again, nothing was left on disk.
    assert.match(fs.readlinkSync(`/proc/${fx.pid}/fd/5`), /ghost \(deleted\)$/);
    assert.ok(!fs.existsSync(path.join(fx.dir, 'ghost')), 'the re-created file is gone again');
    assert.deepEqual(fs.readdirSync(fx.dir).filter((f) => f.startsWith('ghost')), []);
    assert.match(fs.readlinkSync(`/proc/${fx.pid}/fd/6`), /^\/memfd:stasis-special/);
    const { status, log } = await fx.terminate();
    assert.match(log, /^PASS$/m, log);
    assert.deepEqual(status, { kind: 'exited', pid: fx.pid, code: 0 });
  } finally {
    await fx.kill();
  }
});

test('a deleted file over --ghost-limit: one clear line, the process runs on', async () => {
  const fx = await Fixture.start('special', { extraFds: true });
  try {
    const r = runStasis(['dump', '-t', String(fx.pid), '-D', path.join(root, 'limited'), '--ghost-limit', '10']);
    assertOneLineError(r, /deleted file .*ghost.* 25 bytes, over the ghost limit of 10/);
    assert.ok(fx.alive, 'still running');
    assert.equal(tracerPid(fx.pid), 0, 'let go');
    assert.match(procState(fx.pid), /^S/, 'not stopped');
    assert.ok(fs.readdirSync(path.join(root, 'limited')).every((f) => f !== 'inventory.img'), 'no complete-looking checkpoint');
    const { log } = await fx.terminate();
    assert.match(log, /^PASS$/m, log);
  } finally {
    await fx.kill();
  }
});

test('a sparse deleted file: its data extents alone in the image (chunks), its holes holes again after restore', async () => {
  const fx = await Fixture.start('sparseghost', { extraFds: true });
  try {
    const dir = path.join(root, 'sparse');
    const d = runStasis(['dump', '-t', String(fx.pid), '-D', dir]);
    assert.equal(d.status, 0, d.stderr);
    assert.equal(fs.statSync(path.join(dir, 'ghost-file-1.img')).size < 2 * 65536 + 200, true, 'only the two 64 KiB extents');
    await fx.reap();
    restoreDetached(dir);
    fx.restored();
    const { log } = await fx.terminate();
    assert.match(log, /^PASS$/m, log);
  } finally {
    await fx.kill();
  }
});
