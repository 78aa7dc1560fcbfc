// A file removed under the name it was opened and mapped by, while a hard
// link made before keeps it beside it (fixtures/relinked.c, a log rotation's
// link-then-unlink): no copy (that would be another file), no link made at
// dump (criu's --link-remap changes the directory): the fd and the mapping
// are opened again by the remaining name, the same inode, with its offset.
// Its /proc/PID/fd link then reads that name. Another link only in another
// directory is refused (refusals.test.ts, deleted-linked).
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Fixture, initHarness, tmpDir } from './harness';
import { dumpKillRestore } from './net-helpers';
import { readImage } from '../src/images/image';

let root: string;
before(() => { initHarness(); root = tmpDir('relinked'); });
after(() => fs.rmSync(root, { recursive: true, force: true }));

test('removed under its name, linked beside it: the same inode again after restore, nothing made on disk', async () => {
  const fx = await Fixture.start('relinked', { extraFds: true });
  try {
    assert.match(fs.readlinkSync(`/proc/${fx.pid}/fd/3`), /\/orig \(deleted\)$/);
    const ino = fs.statSync(path.join(fx.dir, 'kept')).ino;
    const dir = path.join(root, 'images');
    await dumpKillRestore(fx, dir, { between: () => assert.deepEqual(fs.readdirSync(fx.dir).sort(), ['kept', 'log'], 'the dump made nothing') });
    assert.ok(!fs.existsSync(path.join(dir, 'ghost-file-1.img')), 'no copy');
    const names = readImage(dir, 'files.img', 'FILES', 'file_entry').map((f) => f.reg?.name).filter((n) => n?.startsWith(fx.dir) && !n.endsWith('/log'));
    assert.deepEqual([...new Set(names)], [path.join(fx.dir, 'kept')]);
    assert.equal(fs.readlinkSync(`/proc/${fx.pid}/fd/3`), path.join(fx.dir, 'kept'));
    assert.equal(fs.statSync(`/proc/${fx.pid}/fd/3`).ino, ino);
    assert.deepEqual(fs.readdirSync(fx.dir).sort(), ['kept', 'log']);
    const { log } = await fx.terminate();
    assert.match(log, /^PASS$/m, log);
  } finally {
    await fx.kill();
  }
});
