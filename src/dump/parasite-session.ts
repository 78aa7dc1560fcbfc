// The parasite phase: one session per process, in which every unit asks the
// task what only the task can tell (brk, dispositions, timers, securebits...),
// and one per thread for per-thread facts (altstack, clear_tid...). A page of
// scratch memory is mapped in the task for the calls' buffers and unmapped
// before the session ends. The calls units declare (parasiteCalls,
// parasiteThreadCalls) run first, all of a task's in one batch: one stop of
// the frozen task instead of one per unit (each stop ~0.25 ms here quiet,
// more on a busy machine); then the units' own hooks.
import { Parasite } from '../compel/parasite';
import { RemoteTask, SCRATCH_LEN } from '../compel/remote';
import type { DumpCtx, ProcessDump } from '../unit/dump-ctx';
import type { AnyUnit, ParasiteCalls } from '../unit/unit';
import { tally } from '../log';

function session(ctx: DumpCtx, pd: ProcessDump, units: AnyUnit[]): void {
  const p = tally(ctx.timings, 'parasite.prepare', () => Parasite.prepare(pd.pid));
  try {
    const scratch = tally(ctx.timings, 'parasite.scratch', () => p.mapScratch(SCRATCH_LEN));
    try {
      const t = new RemoteTask(p, scratch, SCRATCH_LEN);
      const threadCalls = (tid: number) => units.flatMap((u) => (u.parasiteThreadCalls ? [u.parasiteThreadCalls(ctx, pd, tid, ctx.state(u))] : []));
      const processCalls = units.flatMap((u) => (u.parasiteCalls ? [u.parasiteCalls(ctx, pd, ctx.state(u))] : []));
      tally(ctx.timings, 'parasite.batch', () => runDeclared(t, [...processCalls, ...threadCalls(pd.pid)]));
      for (const u of units) if (u.parasite) tally(ctx.timings, `parasite.${u.name}`, () => u.parasite!(ctx, pd, t, ctx.state(u)));
      for (const tid of pd.frozen.threads) {
        // Threads share the leader's code and scratch (the leader stays on
        // its own block meanwhile: see compel/parasite.ts).
        const tp = p.forThread(tid);
        try {
          const tt = tid === pd.pid ? t : new RemoteTask(tp, scratch, SCRATCH_LEN);
          if (tid !== pd.pid) tally(ctx.timings, 'parasite.batch', () => runDeclared(tt, threadCalls(tid)));
          for (const u of units) if (u.parasiteThread) tally(ctx.timings, `parasite.${u.name}`, () => u.parasiteThread!(ctx, pd, tid, tt, ctx.state(u)));
        } finally {
          if (tp !== p) tp.cure();
        }
      }
    } finally {
      tally(ctx.timings, 'parasite.scratch', () => p.unmapScratch(scratch, SCRATCH_LEN));
    }
  } finally {
    tally(ctx.timings, 'parasite.cure', () => p.cure());
  }
}

/** Every declared call in one batch (as many stops as the batch code needs: one here), then each unit's results. */
function runDeclared(t: RemoteTask, declared: ParasiteCalls[]): void {
  const rs = t.callMany(declared.flatMap((d) => d.calls));
  let at = 0;
  for (const d of declared) {
    d.done(rs.slice(at, at + d.calls.length), t);
    at += d.calls.length;
  }
}

export function parasitePhase(ctx: DumpCtx, all: readonly AnyUnit[]): void {
  // Independent reads: any order would do; name order keeps it stable. Not
  // localeCompare: its first call sets up ICU's collator, ~20 ms while frozen.
  const units = all.filter((u) => u.parasite || u.parasiteThread || u.parasiteCalls || u.parasiteThreadCalls).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const pd of ctx.processes) session(ctx, pd, units);
}
