// Building the C fixtures (gcc, only when a source is newer), the paths of
// the repository they live in, and scratch directories.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';

/** The repository root (this file runs as dist/test/harness/build.js). */
export const ROOT = path.resolve(__dirname, '..', '..', '..');
export const FIXTURE_SRC = path.join(ROOT, 'test', 'fixtures');
export const FIXTURE_BIN = path.join(FIXTURE_SRC, 'bin');

export interface BuildOptions {
  srcDir?: string;
  outDir?: string;
  pthread?: boolean;
}

/** gcc -O1 -g -Wall NAME.c into outDir/NAME, only when a source is newer. */
export function buildFixture(name: string, opts: BuildOptions = {}): string {
  const srcDir = opts.srcDir ?? FIXTURE_SRC;
  const outDir = opts.outDir ?? FIXTURE_BIN;
  const src = path.join(srcDir, `${name}.c`);
  const out = path.join(outDir, name);
  // The fixture and every shared header (fixture.h, netns.h...).
  const headers = fs.readdirSync(FIXTURE_SRC).filter((f) => f.endsWith('.h')).map((f) => path.join(FIXTURE_SRC, f));
  const deps = [src, ...headers].filter((f) => fs.existsSync(f));
  const newest = Math.max(...deps.map((f) => fs.statSync(f).mtimeMs));
  if (fs.existsSync(out) && fs.statSync(out).mtimeMs >= newest) return out;
  fs.mkdirSync(outDir, { recursive: true });
  const tmp = `${out}.${process.pid}.tmp`;
  const args = ['-O1', '-g', '-Wall', '-Wextra', '-Werror', `-I${FIXTURE_SRC}`, '-o', tmp, src];
  if (opts.pthread) args.push('-pthread');
  const r = spawnSync('gcc', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  if (r.error) throw new Error(`cannot run gcc: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`gcc failed for ${src}:\n${r.stderr}`);
  fs.renameSync(tmp, out); // atomic: a concurrent build never sees half a binary
  return out;
}

export function tmpDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `stasis-${prefix}-`));
}
