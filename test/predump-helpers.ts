// The predump fixture (fixtures/predump.c) as the pre-dump tests drive it
// (predump, dump-precopy, page-server): started with its main region's size,
// moved a step on (SIGUSR1: rewrites, drops, new pages, remaps), the pages a
// dump copied or referred to its parent, and a restored copy held to its own
// check of every byte. Also: a CLI run that must succeed.
import * as assert from 'node:assert/strict';
import { Fixture, describeCli, restoreDetached, loadDumpedMemory, type CliResult } from './harness';
import { tryKill, abi } from '../src/sys';
import { PE } from '../src/images/criu';

/** The main region in MiB the tests start the fixture with (4096 pages per 16 MiB). */
export const PREDUMP_MIB = 16;

/** A predump fixture, added to `started` (the test kills them all after). */
export async function startPredump(started: Fixture[]): Promise<Fixture> {
  const fx = await Fixture.start('predump', { args: [String(PREDUMP_MIB)] });
  started.push(fx);
  return fx;
}

const steps = new WeakMap<Fixture, number>();

/** The fixture's next step (SIGUSR1), waited for in its log. */
export async function step(fx: Fixture): Promise<void> {
  const n = (steps.get(fx) ?? 0) + 1;
  steps.set(fx, n);
  tryKill(fx.pid, abi.SIG.SIGUSR1);
  await fx.waitLog(new RegExp(`^STEP ${n}$`, 'm'));
}

/** A CLI run that must have succeeded (`what` names it in the failure). */
export function ok(r: CliResult, what: string): CliResult {
  assert.equal(r.status, 0, `${what}: ${describeCli(r)}`);
  return r;
}

/** Pages copied into `dir` and pages referred to its parent (PE_PARENT). */
export function pageCounts(dir: string, pid: number): { copied: number; inParent: number } {
  const mem = loadDumpedMemory(dir, pid);
  let copied = 0, inParent = 0;
  for (const e of mem.entries) if (e.flags & PE.PARENT) inParent += e.nrPages; else copied += e.nrPages;
  return { copied, inParent };
}

/** Restore from `dir`, stop it, and hold it to its own check of every byte. */
export async function restoreAndCheck(fx: Fixture, dir: string): Promise<void> {
  const { pid } = restoreDetached(dir);
  fx.restored();
  assert.equal(pid, fx.pid);
  const { status, log } = await fx.terminate();
  assert.match(log, /^PASS$/m, `the restored fixture checked its memory:\n${log}`);
  assert.equal(status.kind, 'exited');
  assert.equal(status.code, 0);
}
