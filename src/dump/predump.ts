// `stasis pre-dump`: copy memory while the tree runs. The tree is frozen only
// to arm write tracking (memory/track.ts) and to read its layout; its pages
// are copied after it is let go. A page written meanwhile is marked written
// by the arming that came before the copy, so the next dump (or pre-dump)
// made on this one (--prev-images-dir) copies it again, and refers to this
// one for the rest (PE_PARENT).
//
// The images: inventory.img, pagemap-PID.img and pages-N.img per process (as
// criu's pre-dump), stasis-track (which userfaultfd each process holds), the
// parent link and its pin, and the digest. Not restorable by itself (no
// pstree.img): a dump made on it is.
import { remoteCalls, assembleParasiteCode } from '../compel/parasite';
import { checkDumpable, freezeTree, release, type FrozenProcess } from '../freeze';
import { readMaps } from '../proc/proc';
import { parts } from '../images/image';
import { DumpDir } from '../images/dir';
import { IMG_VERSION } from '../images/criu';
import { DumpCtx, type DumpOptions, type ProcessDump } from '../unit/dump-ctx';
import { memoryUnit } from '../resources/memory';
import { classify, type ClassifiedVma } from '../resources/memory/classify';
import { dumpPagemap, type PagePlan } from '../resources/memory/dump';
import { pagePlan, writeTracking } from '../resources/memory/incremental';
import { inspect, type DumpResult } from './dump';
import { parasitePhase } from './parasite-session';
import { log, timed } from '../log';
import { finishPageServer, dropPageServer } from '../pageserver/client';

export type PreDumpOptions = Omit<DumpOptions, 'leaveRunning' | 'preDump'>;

/** What is copied of each process once the tree runs again. */
interface ToCopy { pd: ProcessDump; vmas: ClassifiedVma[] }

/**
 * Frozen: arm tracking in every process and note its layout. What was
 * written is known for that layout only: a VMA replaced after the tree runs
 * again must not inherit its verdicts, so the layout is not read again.
 */
function frozenPart(ctx: DumpCtx, tree: FrozenProcess[], timings: Record<string, number>): ToCopy[] {
  ctx.processes = timed(timings, 'inspect', () => inspect(tree));
  ctx.step('parasite');
  timed(timings, 'parasite', () => parasitePhase(ctx, [memoryUnit]));
  return ctx.processes.map((pd) => ({ pd, vmas: readMaps(pd.pid).map(classify) }));
}

export function preDump(pid: number, o: PreDumpOptions): DumpResult {
  const t0 = process.hrtime.bigint();
  const calls0 = remoteCalls.count, stops0 = remoteCalls.stops;
  checkDumpable(pid);
  const opts: DumpOptions = { ...o, leaveRunning: true, preDump: true };
  const out = DumpDir.open(opts.dir);
  const ctx = new DumpCtx(opts, out);
  const timings: Record<string, number> = {};
  let tree: FrozenProcess[] = [];
  let frozenMs = 0;
  let imagesBytes = 0;
  try {
    ctx.step('start');
    memoryUnit.prepare!(ctx, ctx.state(memoryUnit));
    const tf = process.hrtime.bigint();
    assembleParasiteCode(); // not while frozen
    tree = timed(timings, 'freeze', () => freezeTree(pid));
    let copy: ToCopy[];
    try {
      ctx.step('seized');
      copy = frozenPart(ctx, tree, timings);
    } finally {
      // Children first, as a dump's release.
      for (const p of [...tree].reverse()) { try { release(p); } catch (e) { log.warn(`release of ${p.pid}: ${(e as Error).message}`); } }
      frozenMs = Number(process.hrtime.bigint() - tf) / 1e6;
    }
    log.info(`pre-dump: ${tree.length} process(es) frozen ${frozenMs.toFixed(1)} ms; copying while they run`);
    ctx.step('memory');
    const st = ctx.state(memoryUnit);
    timed(timings, 'memory', () => {
      for (const c of copy) {
        const plan: PagePlan = pagePlan(st.parent, c.pd, c.vmas, st.facts.get(c.pd.pid)?.track);
        dumpPagemap(ctx, c.pd, c.vmas, { ...plan, running: true });
      }
    });
    ctx.step('memory-track');
    writeTracking(ctx, ctx.state(memoryUnit));
    ctx.write('inventory.img', 'INVENTORY', parts('inventory_entry', [{ img_version: IMG_VERSION, fdinfo_per_id: true, ns_per_id: true, lsmtype: 0 }]));
    if (ctx.pageXfer) timed(timings, 'page-server', () => finishPageServer(ctx));
    ctx.step('commit');
    timed(timings, 'commit', () => out.commit((s) => ctx.step(s)));
    imagesBytes = out.bytesWritten;
  } finally {
    dropPageServer(ctx);
    out.close();
  }
  return {
    pid, processes: tree.length, threads: tree.reduce((a, p) => a + p.threads.length, 0), pages: ctx.pagesCount, bytes: ctx.pagesBytes,
    ms: Number(process.hrtime.bigint() - t0) / 1e6, frozenMs, imagesBytes, timings,
    remoteCalls: remoteCalls.count - calls0, remoteStops: remoteCalls.stops - stops0,
  };
}

/** Failure-injection points of a pre-dump, in the order they are reached. */
export function preDumpSteps(): string[] {
  return ['start', 'seized', 'parasite', 'memory', 'memory-track', 'commit', 'commit-move'];
}
