// Memory: the address space of each process (mm-PID.img, pagemap-PID.img,
// pages-N.img). What goes in: see classify.ts; how: dump.ts; checks before
// restore: load.ts; rebuilding: restore.ts.
import { abi } from '../../sys';
import { defineUnit } from '../../unit/unit';
import { dumpMemory, type MmFacts } from './dump';
import { prepareTracking, trackParasite, writeTracking, type MemoryDump } from './incremental';
import { connectPageServer } from '../../pageserver/client';
import { listenLazy } from '../../pageserver/lazy-source';
import { loadMemory, validateMemory, type LoadedMm } from './load';
import { restoreAddressSpace, restorePages, restoreProtections, restoreAdvice, restoreMm, type Reprotect } from './restore';
import { openLazy, dropLazy, splitSources } from './lazy';
import { clipSources, heldVmas } from './inherit';
import { restoreAioRings } from './aio';

export { premapForChildren, adoptInherited } from './inherit';

export { classify, type ClassifiedVma } from './classify';
export type { LoadedMm, PagemapRun } from './load';

const { PR } = abi;

export const memoryUnit = defineUnit<MemoryDump, Map<number, LoadedMm>, Reprotect>({
  name: 'memory',
  dumpState: () => ({ facts: new Map<number, MmFacts>() }),
  // The parent checked, then the page server reached: both before the freeze.
  prepare: (ctx, st) => { prepareTracking(ctx, st); connectPageServer(ctx); listenLazy(ctx); },
  parasite(ctx, pd, t, st) {
    // One batch: one stop of the frozen task instead of three.
    const [brk, dumpable, thp] = t.callAll([['brk', 0], ['prctl', PR.GET_DUMPABLE, 0, 0, 0, 0], ['prctl', PR.GET_THP_DISABLE, 0, 0, 0, 0]]);
    st.facts.set(pd.pid, { brk, dumpable: Number(dumpable), thpDisabled: thp !== 0n, track: trackParasite(ctx, pd, t, st) });
  },
  dumpPhases: [
    { name: 'memory', after: ['parasite'], before: ['write-files'], each: (ctx, pd, st) => dumpMemory(ctx, pd, st.facts.get(pd.pid)!, st.parent) },
    // The parent link and pin, and what this dump armed for the next one.
    { name: 'memory-track', after: ['memory'], once: (ctx, st) => writeTracking(ctx, st) },
  ],
  loadAfter: ['files', 'regular files', 'memfd', 'namespaces'],
  load: loadMemory,
  validate: validateMemory,
  restoreState: () => new Map(),
  restorePhases: [
    { name: 'address-space', after: ['close-inherited'], each: (ctx, tr, l, st) => restoreAddressSpace(ctx, tr, l.get(tr.img.pid)!, st, l) },
    // --lazy-pages: private anonymous pages are left to the server (lazy.ts).
    // Pages of VMAs inherited from the parent are in already (inherit.ts).
    { name: 'pages', after: ['address-space'], each: (ctx, tr, l) => { const m = l.get(tr.img.pid)!; restorePages(ctx, tr, m, ctx.opts.lazyPages ? splitSources(m).eager : clipSources(m.sources, heldVmas(ctx, tr.img.pid), false)); } },
    // Before creds: a userfaultfd serving kernel faults needs privilege in the task.
    { name: 'lazy-open', after: ['address-space'], each: (ctx, tr, l) => openLazy(ctx, tr, l.get(tr.img.pid)!) },
    // AIO rings over their filled stand-ins, before protections (aio.ts).
    { name: 'aio-rings', after: ['pages'], before: ['protections'], each: (_ctx, tr, l) => restoreAioRings(tr, l.get(tr.img.pid)!) },
    // Writable-for-filling VMAs go back to their protection once filled.
    { name: 'protections', after: ['pages'], each: (_ctx, tr, _l, st) => restoreProtections(tr, st) },
    // Advice such as DONTFORK or HUGEPAGE may split VMAs: on the final ones; mlock once pages are in.
    { name: 'advice', after: ['pages', 'protections'], each: (_ctx, tr, l) => restoreAdvice(tr, l.get(tr.img.pid)!) },
    // PR_SET_MM_MAP checks its addresses against existing VMAs.
    { name: 'mm', after: ['address-space'], each: (ctx, tr, l) => restoreMm(ctx, tr, l.get(tr.img.pid)!) },
  ],
  cleanup: (ctx, _st, ok) => { if (!ok) dropLazy(ctx); },
});
