// Mappings of deleted files (fixtures/ghostmmap.c): each deleted inode is one
// ghost, shared by its fd and all its mappings (shared, private read-only,
// private unwritten, private written), so after restore they are one inode
// again: MAP_SHARED writes show through the fd and the other way round, and
// unwritten private pages still read through to the file. A file mapped
// through two removed hard links, with no fd, is one ghost too.
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Fixture, initHarness, tmpDir, crit } from './harness';
import { readImage } from '../src/images/image';
import { dumpKillRestore } from './net-helpers';
import { REMAP, FD_TYPES } from '../src/images/criu';

let root: string;
before(() => { initHarness(); root = tmpDir('ghostmmap'); });
after(() => fs.rmSync(root, { recursive: true, force: true }));

test('deleted files mapped (and open): one ghost per inode, one inode again after restore', async () => {
  const fx = await Fixture.start('ghostmmap', { extraFds: true });
  try {
    const maps = fs.readFileSync(`/proc/${fx.pid}/maps`, 'utf8');
    assert.equal(maps.split('\n').filter((l) => l.endsWith('mapped-a (deleted)')).length, 4, maps);
    const dir = path.join(root, 'images');
    await dumpKillRestore(fx, dir);
    // Two inodes: two ghost images; every user of one (fd, mappings) remapped to it.
    const remaps = readImage(dir, 'remap-fpath.img', 'REMAP_FPATH', 'remap_file_path_entry');
    assert.deepEqual([...new Set(remaps.map((r) => r.remap_id))].sort(), [1, 2]);
    assert.ok(remaps.every((r) => r.remap_type === REMAP.GHOST));
    assert.ok(!fs.existsSync(path.join(dir, 'ghost-file-3.img')));
    const files = readImage(dir, 'files.img', 'FILES', 'file_entry').filter((f) => f.type === FD_TYPES.REG);
    const remapped = new Set(remaps.map((r) => r.orig_id));
    const ghostNames = files.filter((f) => remapped.has(f.id)).map((f) => path.basename(f.reg!.name));
    // B's mappings (same flags) share one entry, under either of its names.
    assert.deepEqual([...new Set(ghostNames.map((n) => n.replace(/\.link$/, '')))].sort(), ['mapped-a', 'mapped-b']);
    // The images parse with criu's own tool.
    assert.match(crit(['decode', '-i', path.join(dir, 'ghost-file-1.img')]), /"magic": "GHOST_FILE"/);
    // Restored: the mappings name the deleted files again, nothing is left on disk.
    const after = fs.readFileSync(`/proc/${fx.pid}/maps`, 'utf8');
    assert.equal(after.split('\n').filter((l) => l.endsWith('mapped-a (deleted)')).length, 4, after);
    assert.deepEqual(fs.readdirSync(fx.dir).filter((f) => f.startsWith('mapped')), []);
    const { log } = await fx.terminate();
    assert.match(log, /^PASS$/m, log);
  } finally {
    await fx.kill();
  }
});
