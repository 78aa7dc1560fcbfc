// A big eager restore fills pages on two threads (resources/memory/fill-pool.ts):
// the restore's thread and a helper claim 16 MiB chunks from one table. The
// restored process checks every page (bigmem: each page's own byte), so a
// chunk copied twice, to the wrong place or not at all fails it; the debug
// log says how many chunks the helper took (made to take the first one here:
// in a restore this small it would often find none left).
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Fixture, initHarness, runStasis, describeCli, tmpDir, restoreDetached, ROOT } from './harness';

let root: string;

before(() => {
  initHarness();
  root = tmpDir('fill-threads');
});

after(() => {
  fs.rmSync(root, { recursive: true, force: true });
});

const MIB = 160;

async function dumpBig(name: string): Promise<{ fx: Fixture; dir: string }> {
  const fx = await Fixture.start('bigmem', { srcDir: path.join(ROOT, 'bench', 'fixtures'), outDir: path.join(ROOT, 'dist', 'bench-bin'), args: [String(MIB)], readyTimeoutMs: 60000 });
  const dir = path.join(root, name);
  const r = runStasis(['dump', '-t', String(fx.pid), '-D', dir]);
  assert.equal(r.status, 0, describeCli(r));
  await fx.reap();
  return { fx, dir };
}

test(`a ${MIB} MiB restore: both threads fill, every page right`, async () => {
  const { fx, dir } = await dumpBig('both');
  try {
    const logFile = path.join(root, 'both.log');
    const { pid } = restoreDetached(dir, ['-v4', '-o', logFile], { STASIS_FILL_WAIT_HELPER: '1' });
    fx.restored();
    assert.equal(pid, fx.pid);
    const m = /pages by UFFDIO_COPY: (\d+) chunks, (\d+) of them by the helper thread/.exec(fs.readFileSync(logFile, 'utf8'));
    assert.ok(m, 'the pages went through the two filling threads');
    assert.ok(Number(m[1]) >= MIB / 16, `${m[1]} jobs: at most 16 MiB each`);
    assert.ok(Number(m[2]) >= 1 && Number(m[2]) <= Number(m[1]), `the helper took ${m[2]} of ${m[1]}`);
    const { status, log } = await fx.terminate(30000);
    assert.match(log, /^PASS$/m, log);
    assert.equal(status.kind, 'exited');
  } finally {
    await fx.kill();
  }
});

test(`a ${MIB} MiB restore without the helper's head start: every page right whoever took the chunks`, async () => {
  const { fx, dir } = await dumpBig('race');
  try {
    restoreDetached(dir);
    fx.restored();
    const { status, log } = await fx.terminate(30000);
    assert.match(log, /^PASS$/m, log);
    assert.equal(status.kind, 'exited');
  } finally {
    await fx.kill();
  }
});
