// The parasite phase: one session per process, in which every unit asks the
// task what only the task can tell (brk, dispositions, timers, securebits...),
// and one per thread for per-thread facts (altstack, clear_tid...). A page of
// scratch memory is mapped in the task for the calls' buffers and unmapped
// before the session ends.
import { Parasite } from '../compel/parasite';
import { RemoteTask, SCRATCH_LEN } from '../compel/remote';
import type { DumpCtx, ProcessDump } from '../unit/dump-ctx';
import type { AnyUnit } from '../unit/unit';
import { tally } from '../log';

function session(ctx: DumpCtx, pd: ProcessDump, units: AnyUnit[]): void {
  const p = tally(ctx.timings, 'parasite.prepare', () => Parasite.prepare(pd.pid));
  try {
    const scratch = tally(ctx.timings, 'parasite.scratch', () => p.mapScratch(SCRATCH_LEN));
    try {
      const t = new RemoteTask(p, scratch, SCRATCH_LEN);
      for (const u of units) if (u.parasite) tally(ctx.timings, `parasite.${u.name}`, () => u.parasite!(ctx, pd, t, ctx.state(u)));
      for (const tid of pd.frozen.threads) {
        // Threads share the leader's code and scratch (the leader stays on
        // its own block meanwhile: see compel/parasite.ts).
        const tp = p.forThread(tid);
        try {
          const tt = tid === pd.pid ? t : new RemoteTask(tp, scratch, SCRATCH_LEN);
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

export function parasitePhase(ctx: DumpCtx, all: readonly AnyUnit[]): void {
  // Independent reads: any order would do; name order keeps it stable. Not
  // localeCompare: its first call sets up ICU's collator, ~20 ms while frozen.
  const units = all.filter((u) => u.parasite || u.parasiteThread).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const pd of ctx.processes) session(ctx, pd, units);
}
