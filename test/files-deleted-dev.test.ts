// Deleted device nodes held open (fixtures/deleteddev.c): a node of a
// stateless device (/dev/null's, /dev/zero's) is a ghost with its rdev,
// made again with mknod, opened as it was, removed; a node of a device with
// state of its own (/dev/kmsg's) is refused at dump and the process runs on.
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Fixture, initHarness, runStasis, tmpDir, tracerPid, procState } from './harness';
import { dumpKillRestore, assertOneLineError } from './net-helpers';
import { readImage } from '../src/images/image';
import { abi } from '../src/sys';

let root: string;
before(() => { initHarness(); root = tmpDir('deleteddev'); });
after(() => fs.rmSync(root, { recursive: true, force: true }));

test('deleted nodes of /dev/null and /dev/zero held open: the same devices, deleted again, after restore', async () => {
  const fx = await Fixture.start('deleteddev', { extraFds: true });
  try {
    const dir = path.join(root, 'images');
    await dumpKillRestore(fx, dir);
    const ghosts = [1, 2].map((n) => readImage(dir, `ghost-file-${n}.img`, 'GHOST_FILE', 'ghost_file_entry')[0]);
    assert.deepEqual(ghosts.map((g) => [g.mode, g.rdev]), [[abi.S_IF.CHR | 0o620, fs.statSync('/dev/null').rdev], [abi.S_IF.CHR | 0o620, fs.statSync('/dev/zero').rdev]]);
    assert.match(fs.readlinkSync(`/proc/${fx.pid}/fd/3`), /\/null \(deleted\)$/);
    assert.deepEqual(fs.readdirSync(fx.dir).filter((f) => f !== 'log'), [], 'nothing left of the ghosts');
    const { log } = await fx.terminate();
    assert.match(log, /^PASS$/m, log);
  } finally {
    await fx.kill();
  }
});

test('a deleted node of a device with state (/dev/kmsg\'s) held open: refused at dump, the process runs on', async () => {
  const fx = await Fixture.start('deleteddev', { extraFds: true, args: ['kmsg'] });
  try {
    const r = runStasis(['dump', '-t', String(fx.pid), '-D', path.join(root, 'refused')]);
    assertOneLineError(r, /fd 6 of pid \d+: .*\/kmsg \(deleted\) is a device node \(character device 1:11\) held open; only a deleted node of a stateless device \(.*\/dev\/null.*\) is carried; not supported/);
    assert.ok(fx.alive, 'still running');
    assert.equal(tracerPid(fx.pid), 0, 'let go');
    assert.match(procState(fx.pid), /^S/, 'not stopped');
    const { log } = await fx.terminate();
    assert.match(log, /^PASS$/m, log);
  } finally {
    await fx.kill();
  }
});
