// Large sparse deleted files (fixtures/ghostlarge.c, 3 GiB long): only their
// data runs go into the ghost image (ghost_chunk_entry, criu's chunks), only
// the data counts against --ghost-limit, and after restore the size, the
// data, st_blocks and the holes are what they were.
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Fixture, initHarness, runStasis, tmpDir, tracerPid, procState, crit } from './harness';
import { dumpKillRestore, assertOneLineError } from './net-helpers';

let root: string;
before(() => { initHarness(); root = tmpDir('ghostsparse'); });
after(() => fs.rmSync(root, { recursive: true, force: true }));

const GIB = 2 ** 30;
const SIZE = 3 * GIB + 123;

test('a 3 GiB deleted file of 68 KiB data: its runs alone in the image, holes and st_blocks back after restore', async () => {
  const fx = await Fixture.start('ghostlarge', { extraFds: true });
  try {
    const dir = path.join(root, 'light');
    await dumpKillRestore(fx, dir);
    assert.ok(fs.statSync(path.join(dir, 'ghost-file-1.img')).size < 65536 + 2 * 4096 + 512, 'only the data runs');
    // criu's own tool reads the chunks: the entry, then each run's offset and length.
    const img = JSON.parse(crit(['decode', '-i', path.join(dir, 'ghost-file-1.img')])) as { entries: Record<string, unknown>[] };
    assert.equal(img.entries[0].size, SIZE);
    assert.equal(img.entries[0].chunks, true);
    const runs = img.entries.slice(1).map((c) => [Number(c.off), Number(c.len)]);
    assert.equal(runs[0][0], 0);
    assert.equal(runs[0][1], 65536);
    assert.equal(runs[1][0], GIB + 8192);
    assert.equal(runs.at(-1)![0] + runs.at(-1)![1], SIZE, 'the last run ends at the end');
    const { log } = await fx.terminate();
    assert.match(log, /^PASS$/m, log);
  } finally {
    await fx.kill();
  }
});

test('a sparse deleted file with 2 MiB of data: refused over the default limit, carried with --ghost-limit 4M', async () => {
  const fx = await Fixture.start('ghostlarge', { extraFds: true, args: ['heavy'] });
  try {
    const r = runStasis(['dump', '-t', String(fx.pid), '-D', path.join(root, 'refused')]);
    assertOneLineError(r, /deleted file .*large \(deleted\) holds 2\d{6} bytes of data \(3221225595 long, the rest holes\), over the ghost limit of 1048576 \(--ghost-limit\)/);
    assert.ok(fx.alive, 'still running');
    assert.equal(tracerPid(fx.pid), 0, 'let go');
    assert.match(procState(fx.pid), /^S/, 'not stopped');
    // The holes are free: 4 MiB is room enough for a 3 GiB file.
    await dumpKillRestore(fx, path.join(root, 'heavy'), { dumpArgs: ['--ghost-limit', '4M'] });
    const { log } = await fx.terminate();
    assert.match(log, /^PASS$/m, log);
  } finally {
    await fx.kill();
  }
});
