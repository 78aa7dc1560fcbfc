// O_PATH fds (fixtures/opath.c): a path held without opening the file, on a
// file, a directory, a FIFO (never opened by it), /dev/null, and on symlinks
// themselves (O_NOFOLLOW): a live one, a dangling one, and one removed since
// (a ghost symlink: made again with its target, opened, removed). After
// restore each has its O_PATH (and O_NOFOLLOW) flags and its inode.
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Fixture, initHarness, tmpDir } from './harness';
import { dumpKillRestore } from './net-helpers';
import { readImage } from '../src/images/image';
import { abi } from '../src/sys';

let root: string;
before(() => { initHarness(); root = tmpDir('opath'); });
after(() => fs.rmSync(root, { recursive: true, force: true }));

test('O_PATH fds on a file, a directory, a FIFO, /dev/null and symlinks (one removed): flags and inodes back', async () => {
  const fx = await Fixture.start('opath', { extraFds: true });
  try {
    const dir = path.join(root, 'images');
    await dumpKillRestore(fx, dir);
    const regs = readImage(dir, 'files.img', 'FILES', 'file_entry').map((f) => f.reg).filter((r) => r !== undefined);
    const byName = (n: string) => regs.find((r) => r!.name.endsWith(`/${n}`))!;
    assert.equal(byName('link').flags & (abi.O.PATH | abi.O.NOFOLLOW), abi.O.PATH | abi.O.NOFOLLOW);
    assert.equal(byName('fifo').flags & abi.O.PATH, abi.O.PATH);
    // The removed symlink is a ghost carrying its target.
    const [ghost] = readImage(dir, 'ghost-file-1.img', 'GHOST_FILE', 'ghost_file_entry');
    assert.equal(ghost.mode & abi.S_IF.MT, abi.S_IF.LNK);
    assert.equal(ghost.symlnk_target, path.join(fx.dir, 'dir'));
    assert.match(fs.readlinkSync(`/proc/${fx.pid}/fd/7`), /link-gone \(deleted\)$/);
    assert.ok(!fs.existsSync(path.join(fx.dir, 'link-gone')) && !fs.readdirSync(fx.dir).some((f) => f.includes('stasis-ghost')), 'the ghost symlink is gone again');
    const { log } = await fx.terminate();
    assert.match(log, /^PASS$/m, log);
  } finally {
    await fx.kill();
  }
});
