// The bundle's code cache warms itself (bin/stasis.js, warmCache): after a
// command's first success with a build, the cache is written again from that
// process, with the functions the command compiled, and
// dist/stasis.bundle.cache.warmed lists the command. Once per command and
// build; never where others may write dist/ (the cache is code). Run on a
// copy of bin/ and dist/ so that the repository's own cache is not touched.
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as vm from 'node:vm';
import { spawnSync } from 'node:child_process';
import { initHarness, tmpDir, ROOT } from './harness';

let root: string;
let dist: string;

before(() => {
  initHarness();
  root = tmpDir('code-cache');
  dist = path.join(root, 'dist');
  fs.cpSync(path.join(ROOT, 'bin'), path.join(root, 'bin'), { recursive: true });
  fs.mkdirSync(dist);
  fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(root, 'node_modules'));
  fs.copyFileSync(path.join(ROOT, 'package.json'), path.join(root, 'package.json'));
  for (const f of ['stasis.bundle.js', 'src']) fs.cpSync(path.join(ROOT, 'dist', f), path.join(dist, f), { recursive: true, preserveTimestamps: true });
  // The build's cold cache: made as scripts/bundle.js makes it (every module's top level run).
  const file = path.join(dist, 'stasis.bundle.js');
  const script = new vm.Script(fs.readFileSync(file, 'latin1'), { filename: file });
  const b = script.runInThisContext()(require('node:module'), path, path.join(dist, 'src')) as { names: string[]; load(n: string): unknown };
  for (const n of b.names) b.load(n);
  fs.writeFileSync(path.join(dist, 'stasis.bundle.cache'), script.createCachedData());
  fs.chmodSync(dist, 0o755);
});

after(() => {
  fs.rmSync(root, { recursive: true, force: true });
});

function run(...args: string[]): number {
  const r = spawnSync(path.join(root, 'bin', 'stasis.js'), args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 60000 });
  return r.status ?? -1;
}

const cache = () => fs.readFileSync(path.join(dist, 'stasis.bundle.cache'));
/** The commands the list names, if it is for the bundle there now. */
const warmed = () => {
  let lines: string[];
  try { lines = fs.readFileSync(path.join(dist, 'stasis.bundle.cache.warmed'), 'latin1').split('\n'); } catch { return undefined; }
  const b = fs.statSync(path.join(dist, 'stasis.bundle.js'));
  return lines[0] === `bundle ${b.mtimeMs} ${b.size}` ? lines.slice(1).join('\n') : 'stale';
};

function accepted(data: Buffer): boolean {
  const file = path.join(dist, 'stasis.bundle.js');
  return !new vm.Script(fs.readFileSync(file, 'latin1'), { filename: file, cachedData: data }).cachedDataRejected;
}

test('a command\'s first success writes the cache again, bigger (what it compiled) and accepted; not its second run', () => {
  const cold = cache();
  assert.equal(run('check'), 0);
  const warm = cache();
  assert.equal(warmed(), 'check\n');
  assert.ok(warm.length > cold.length, `cache ${cold.length} -> ${warm.length} bytes`);
  assert.ok(accepted(warm), 'V8 takes the new cache');
  const mtime = fs.statSync(path.join(dist, 'stasis.bundle.cache')).mtimeMs;
  assert.equal(run('check'), 0);
  assert.equal(fs.statSync(path.join(dist, 'stasis.bundle.cache')).mtimeMs, mtime, 'written once per command');
  assert.equal(run('show', path.join(root, 'no-such-dir')), 1);
  assert.equal(warmed(), 'check\n', 'a failed command warms nothing');
  assert.deepEqual(fs.readdirSync(dist).filter((f) => f.startsWith('.')), [], 'no temporary file left');
});

test('a rebuild makes the list stale (every command warms again); a dist/ others may write is never written', () => {
  // The bundle newer than the list: as after a build.
  assert.equal(warmed(), 'check\n');
  const later = new Date(Date.now() + 2000);
  fs.utimesSync(path.join(dist, 'stasis.bundle.js'), later, later);
  assert.equal(warmed(), 'stale');
  const mtime = fs.statSync(path.join(dist, 'stasis.bundle.cache')).mtimeMs;
  assert.equal(run('check'), 0);
  assert.equal(warmed(), 'check\n', 'listed again for the new build');
  assert.notEqual(fs.statSync(path.join(dist, 'stasis.bundle.cache')).mtimeMs, mtime, 'and the cache written again');
  fs.rmSync(path.join(dist, 'stasis.bundle.cache.warmed'));
  fs.chmodSync(dist, 0o775);
  const before = cache();
  assert.equal(run('check'), 0);
  assert.equal(warmed(), undefined);
  assert.ok(cache().equals(before), 'group-writable dist/: cache left as it was');
  fs.chmodSync(dist, 0o755);
});
