// Running the CLI (bin/stasis.js, executed as users run it: through its own
// #! line), and the dump's failure-injection points.
import * as path from 'node:path';
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { dumpSteps } from '../../src/dump/dump';
import { ROOT } from './build';

export const STASIS = path.join(ROOT, 'bin', 'stasis.js');

/** Every failure-injection point of a dump, as the dump itself declares them. */
export const DUMP_STEPS = dumpSteps();

export interface CliResult {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export function runStasis(args: string[], env: Record<string, string | undefined> = {}, timeoutMs = 60000): CliResult {
  const e: NodeJS.ProcessEnv = { ...process.env };
  delete e.STASIS_FAIL_AT;
  for (const [k, v] of Object.entries(env)) if (v === undefined) delete e[k]; else e[k] = v;
  const r: SpawnSyncReturns<string> = spawnSync(STASIS, args, {
    env: e, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: timeoutMs,
  });
  if (r.error) throw r.error;
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

export function describeCli(r: CliResult): string {
  return `status ${r.status} signal ${r.signal}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`;
}

/**
 * `stasis restore -D dir -d [...args]`: throws (with stasis' output) unless
 * it exited 0 and named the restored pid. When stasis exits, the restored root
 * (stasis' child) is re-parented to us: ours to reap.
 */
export function restoreDetached(dir: string, args: string[] = [], env: Record<string, string | undefined> = {}): { pid: number; r: CliResult } {
  const r = runStasis(['restore', '-D', dir, '-d', ...args], env);
  const m = /^restored pid (\d+)\b/m.exec(r.stderr);
  if (r.status !== 0 || !m) throw new Error(`restore -D ${dir} -d failed: ${describeCli(r)}`);
  return { pid: Number(m[1]), r };
}
