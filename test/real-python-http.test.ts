// A real program: `python3 -m http.server PORT --bind 127.0.0.1` serving a
// temp dir is dumped (and killed), restored, and serves the same file again,
// and a file created after the restore; requests come from this test process
// (outside the dumped tree).
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { initHarness, tmpDir, pattern, type Fixture } from './harness';
import { startProgram, waitPort, dumpKillRestore, httpGet, tcpSockets } from './net-helpers';

const PORT = 47350;

let root: string;
let fx: Fixture | undefined;

before(() => {
  initHarness();
  root = tmpDir('pyhttp');
});

after(async () => {
  await fx?.kill();
  fs.rmSync(root, { recursive: true, force: true });
});

/** The real interpreter (not a version-manager shim that would exec it). */
function python(): string {
  const r = spawnSync('python3', ['-c', 'import sys; print(sys.executable)'], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`python3: ${r.stderr}`);
  return r.stdout.trim();
}

function sigState(pid: number): string[] {
  return fs.readFileSync(`/proc/${pid}/status`, 'utf8').split('\n').filter((l) => /^Sig(Blk|Ign|Cgt):/.test(l));
}

test('python3 -m http.server: dump → kill → restore → serves files again', async () => {
  const www = path.join(root, 'www');
  fs.mkdirSync(www);
  const body = pattern(42, 100_000).toString('base64');
  fs.writeFileSync(path.join(www, 'data.txt'), body);
  fs.writeFileSync(path.join(www, 'index.html'), '<h1>stasis</h1>\n');
  fx = await startProgram('pyhttp', () => [python(), '-u', '-m', 'http.server', String(PORT), '--bind', '127.0.0.1', '--directory', www]);
  await waitPort(PORT);
  const r0 = await httpGet(PORT, '/data.txt');
  assert.equal(r0.status, 200);
  assert.equal(r0.body, body);
  await new Promise((r) => setTimeout(r, 50));
  assert.deepEqual(tcpSockets(PORT).filter((s) => s.state === 'ESTABLISHED'), [], 'no connection left');

  const sigBefore = sigState(fx.pid);
  const dir = path.join(root, 'images');
  await dumpKillRestore(fx, dir);
  await waitPort(PORT);
  const r1 = await httpGet(PORT, '/data.txt');
  assert.equal(r1.status, 200);
  assert.equal(r1.body, body, 'the same file, whole');
  assert.equal((await httpGet(PORT, '/')).body, '<h1>stasis</h1>\n', 'the index (its --directory kept)');
  fs.writeFileSync(path.join(www, 'new.txt'), 'created after the restore\n');
  assert.equal((await httpGet(PORT, '/new.txt')).body, 'created after the restore\n');
  assert.equal((await httpGet(PORT, '/missing')).status, 404);
  // Its request log (stderr) goes on in the same file, after the dumped lines.
  const log = fx.log();
  assert.equal([...log.matchAll(/"GET \/data.txt HTTP\/1.1" 200/g)].length, 2, log);

  assert.deepEqual(sigState(fx.pid), sigBefore, 'signal dispositions (python\'s handlers; SIGINT ignored by the starting shell)');

  process.kill(fx.pid, 'SIGTERM');
  const st = await fx.reap();
  assert.deepEqual(st, { kind: 'signaled', pid: fx.pid, signal: 15, core: false });
});
