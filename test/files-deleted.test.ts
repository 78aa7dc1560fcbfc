// Directories deleted while a process is in them or holds them open (a cwd,
// an fd), a FIFO deleted while open (with data queued), a file made with
// O_TMPFILE (reopened without its O_DIRECTORY bit), and a chroot whose cwd is outside its root: a deleted directory is
// always empty, so it is made again (owner, mode), entered or opened, and
// removed before anything runs; the cwd is entered before the chroot, from
// where both paths were read.
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Fixture, initHarness, tmpDir } from './harness';
import { dumpKillRestore } from './net-helpers';
import { ImageCursor } from '../src/images/image';

let root: string;
before(() => { initHarness(); root = tmpDir('deadcwd'); });
after(() => fs.rmSync(root, { recursive: true, force: true }));

test('a deleted cwd, an fd of a deleted directory, a deleted FIFO, an O_TMPFILE file, a chroot with its cwd outside: as they were, nothing left behind', async () => {
  const dir = path.join(root, 'images');
  const fx = await Fixture.start('deadcwd', { extraFds: true });
  try {
    const child = Number(fx.manifest.values.get('CHILD')![0]);
    await dumpKillRestore(fx, dir, { tree: [child] });
    // The ghosts are gone again before the tree ran.
    assert.deepEqual(fs.readdirSync(fx.dir).filter((n) => n.startsWith('gone') || n.startsWith('fifo')), [], 'no ghost left');
    const ghosts = fs.readdirSync(dir).filter((n) => n.startsWith('ghost-file-'));
    const kinds = ghosts.map((g) => new ImageCursor(path.join(dir, g), fs.readFileSync(path.join(dir, g)), 'GHOST_FILE').entry('ghost_file_entry').mode & 0o170000).sort((a, b) => a - b);
    assert.deepEqual(kinds, [0o010000, 0o040000, 0o040000, 0o100000], 'ghosts: the FIFO, the cwd, the directory fd, the O_TMPFILE file');
    const { log } = await fx.terminate();
    assert.match(log, /^PASS$/m, log);
  } finally {
    await fx.kill();
  }
});
