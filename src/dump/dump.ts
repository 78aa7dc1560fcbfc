// `stasis dump`: freeze the tree, run the declared dump phases (the units'
// and the few below), move the images into place, then kill or release the
// tree. The target is only killed once the checkpoint is complete; any
// failure releases it untouched (every parasite call leaves the task whole).
import { abi, kcmp } from '../sys';
import { freezeTree, release, killFrozen, checkDumpable, type FrozenProcess, type FoundZombie } from '../freeze';
import { inspectZombies, zombieEntries } from './zombies';
import { StasisError, ErrorCodes } from '../errors';
import { readStat, readStatus, innermostId } from '../proc/proc';
import { namespacesUnit, inventoryRootIds } from '../resources/ns/namespaces';
import { parts } from '../images/image';
import { DumpDir } from '../images/dir';
import { MARCH, IMG_VERSION } from '../images/criu';
import { order } from '../unit/order';
import { DumpCtx, type DumpOptions, type ProcessDump } from '../unit/dump-ctx';
import type { AnyUnit, DumpPhase } from '../unit/unit';
import { UNITS } from '../resources/registry';
import { netlockInventory } from '../resources/netlock';
import { parasitePhase } from './parasite-session';
import { remoteCalls, assembleParasiteCode } from '../compel/parasite';
import { log, timed, ordered } from '../log';
import { finishPageServer, dropPageServer } from '../pageserver/client';
import type { LazyServeStats } from '../pageserver/lazy-source';

const { KCMP } = abi;

export interface DumpResult {
  pid: number;
  processes: number;
  threads: number;
  pages: number;
  bytes: number;
  ms: number;
  /** Time the process was frozen. */
  frozenMs: number;
  /** Bytes of all image files written. */
  imagesBytes: number;
  /**
   * Milliseconds spent in each step, by name, in the order run: the top-level
   * steps add up to at most `ms`; "step.part" names are parts of a step (the
   * parasite's, by unit) and add up to at most their step.
   */
  timings: Record<string, number>;
  /** Remote system calls run in the tree's tasks, and the stops they took (a batch runs several in one). */
  remoteCalls: number;
  remoteStops: number;
  /** --lazy-pages: what was served to the restorer before the tree was killed. */
  lazy?: LazyServeStats;
}

interface BoundPhase extends DumpPhase<unknown> { unit?: AnyUnit }

/**
 * Processes sharing an mm, fs struct or signal handlers without being threads
 * (vfork, CLONE_VM...) are not supported. An fd table shared with the parent
 * (clone(CLONE_FILES) without CLONE_THREAD) is: both get one files_id, and
 * restore clones the child with CLONE_FILES, as criu does. Sharing with any
 * other process (the parent left the table since) is refused.
 */
function checkNotShared(pds: ProcessDump[]): void {
  for (let i = 0; i < pds.length; i++) {
    for (let j = 0; j < i; j++) {
      for (const [type, what] of [[KCMP.VM, 'address space'], [KCMP.FS, 'cwd/root (CLONE_FS)'], [KCMP.SIGHAND, 'signal handlers']] as const) {
        if (kcmp(pds[i].pid, pds[j].pid, type) === 0) {
          throw new StasisError(ErrorCodes.UNSUPPORTED, `processes ${pds[j].pid} and ${pds[i].pid} share their ${what} (vfork or clone without CLONE_THREAD); not supported yet`);
        }
      }
    }
    const sharer = pds.slice(0, i).find((p) => kcmp(pds[i].pid, p.pid, KCMP.FILES) === 0);
    if (!sharer) continue;
    const parent = pds.find((p) => p.pid === pds[i].frozen.ppid);
    if (!parent || parent.ids.files_id !== sharer.ids.files_id) {
      throw new StasisError(ErrorCodes.UNSUPPORTED, `processes ${sharer.pid} and ${pds[i].pid} share their fd table, which ${pds[i].pid}'s parent does not share; not supported yet`);
    }
    pds[i].ids.files_id = sharer.ids.files_id;
  }
}

/** What every unit may read of a frozen process; empty core entries for the units to fill. */
export function inspect(tree: FrozenProcess[]): ProcessDump[] {
  const pds = tree.map((frozen, i): ProcessDump => {
    const status = readStatus(frozen.pid);
    const vtids = new Map(frozen.threads.map((tid) => [tid, tid === frozen.pid ? innermostId(status, 'NSpid') : innermostId(readStatus(tid), 'NSpid')]));
    return {
      pid: frozen.pid, vpid: vtids.get(frozen.pid)!, vpgid: innermostId(status, 'NSpgid'), vsid: innermostId(status, 'NSsid'), vtids,
      frozen, stat: readStat(frozen.pid), status,
      ids: { vm_id: i + 1, files_id: i + 1, fs_id: i + 1, sighand_id: i + 1 },
      core: new Map(frozen.threads.map((tid) => [tid, { mtype: MARCH.X86_64, thread_core: {}, ...(tid === frozen.pid ? { tc: {} } : {}) }])),
    };
  });
  checkNotShared(pds);
  return pds;
}

/** The phases of a dump: the orchestration's own, and every unit's, in declared order. */
export function dumpPhases(units: readonly AnyUnit[] = UNITS): BoundPhase[] {
  const fromUnits: BoundPhase[] = units.flatMap((u) => (u.dumpPhases ?? []).map((p) => ({ ...(p as DumpPhase<unknown>), unit: u })));
  const own: BoundPhase[] = [
    { name: 'parasite', once: (ctx) => parasitePhase(ctx, units) },
    {
      name: 'pstree', after: ['parasite'],
      once(ctx) {
        for (const pd of ctx.processes) ctx.write(`ids-${pd.vpid}.img`, 'IDS', parts('task_kobj_ids_entry', [pd.ids]));
        const vpidOf = new Map(ctx.processes.map((pd) => [pd.pid, pd.vpid]));
        ctx.write('pstree.img', 'PSTREE', parts('pstree_entry', [...ctx.processes.map((pd) => ({
          pid: pd.vpid, ppid: vpidOf.get(pd.frozen.ppid) ?? 0, pgid: pd.vpgid, sid: pd.vsid, threads: pd.frozen.threads.map((t) => pd.vtids.get(t)!),
        })), ...zombieEntries(ctx, vpidOf)]));
      },
    },
  ];
  const all = [...own, ...fromUnits];
  // The inventory marks a complete checkpoint: it comes after everything else.
  all.push({
    name: 'inventory', after: all.map((p) => p.name),
    once(ctx) {
      ctx.write('inventory.img', 'INVENTORY', parts('inventory_entry', [{
        img_version: IMG_VERSION, fdinfo_per_id: true, root_ids: inventoryRootIds(ctx.state(namespacesUnit), ctx.processes[0].ids), ns_per_id: true, lsmtype: 0, ...netlockInventory(ctx),
        ...(ctx.opts.tcpClose ? { tcp_close: true } : {}),
      }]));
    },
  });
  return order(all, 'dump phases');
}

/** Failure-injection points of a dump, in the order they are reached. */
export function dumpSteps(): string[] {
  return ['start', 'seized', ...dumpPhases().map((p) => p.name), 'commit', 'commit-move'];
}

function runPhase(ctx: DumpCtx, p: BoundPhase): void {
  const st = p.unit ? ctx.state(p.unit) : undefined;
  if (p.each) for (const pd of ctx.processes) p.each(ctx, pd, st);
  p.once?.(ctx, st);
}

export function dump(pid: number, opts: DumpOptions): DumpResult {
  const t0 = process.hrtime.bigint();
  const early: Record<string, number> = {};
  // Refuse what cannot be dumped before touching the images directory.
  timed(early, 'check', () => checkDumpable(pid));
  const phases = dumpPhases();
  const out = timed(early, 'open', () => DumpDir.open(opts.dir));
  const ctx = new DumpCtx(opts, out);
  const timings = Object.assign(ctx.timings, early);
  const calls0 = remoteCalls.count, stops0 = remoteCalls.stops;
  let tree: FrozenProcess[] = [];
  let tFrozen = t0;
  let tReleased = t0;
  let released = false;
  let done = false;
  let imagesBytes = 0;
  let netLocked = false;
  let unlockError: unknown;
  let lazy: LazyServeStats | undefined;
  try {
    ctx.step('start');
    // What can be refused without touching the tree (a bad parent images directory...).
    for (const u of UNITS) u.prepare?.(ctx, ctx.state(u));
    const zombies: FoundZombie[] = [];
    opts.notify?.('pre-dump');
    assembleParasiteCode(); // not while frozen
    tree = timed(timings, 'freeze', () => freezeTree(pid, zombies));
    tFrozen = process.hrtime.bigint();
    log.info(`frozen: ${tree.map((p) => `${p.pid} (${p.threads.length} thread${p.threads.length > 1 ? 's' : ''})`).join(', ')}`);
    ctx.step('seized');
    opts.notify?.('network-lock');
    netLocked = opts.notify !== undefined;
    ctx.processes = timed(timings, 'inspect', () => inspect(tree));
    ctx.zombies = inspectZombies(zombies, ctx.processes);
    for (const p of phases) {
      ctx.step(p.name);
      timed(timings, p.name, () => runPhase(ctx, p));
    }
    // Pages sent to a page server are written there before the checkpoint is committed here.
    if (ctx.pageXfer) timed(timings, 'page-server', () => finishPageServer(ctx));
    if (opts.leaveRunning && !opts.notify) {
      // -R (no orchestrator to tell first): everything is read, so the tree
      // goes on now; the digest's last hashing and the commit follow while it
      // runs (if they fail, the tree runs on, as -R asked, without images).
      released = true;
      try { timed(timings, 'release', () => finishDump(ctx, tree, true)); } finally { tReleased = process.hrtime.bigint(); }
    }
    ctx.step('commit');
    timed(timings, 'commit', () => out.commit((s) => ctx.step(s)));
    // The orchestrator may still refuse (the images stay; the tree goes on, as criu's).
    opts.notify?.('post-dump');
    done = true;
    imagesBytes = out.bytesWritten;
    // The images are complete: the directory is let go (its lock too) for a restorer on this machine.
    if (ctx.lazySource) { out.close(); lazy = serveLazy(ctx, timings, () => { done = false; }); }
  } finally {
    // A tree that goes on gets its network back before it runs again.
    if (netLocked && !(done && !opts.leaveRunning)) try { opts.notify!('network-unlock'); } catch (e) { unlockError = e; }
    if (!released) {
      timed(timings, done && !opts.leaveRunning ? 'kill' : 'release', () => finishDump(ctx, tree, done));
      tReleased = process.hrtime.bigint();
    }
    dropPageServer(ctx);
    ctx.lazySource?.close();
    out.close();
  }
  if (unlockError) throw unlockError;
  const t1 = process.hrtime.bigint();
  return {
    pid, processes: tree.length, threads: tree.reduce((a, p) => a + p.threads.length, 0), pages: ctx.pagesCount, bytes: ctx.pagesBytes,
    ms: Number(t1 - t0) / 1e6, frozenMs: Number(tReleased - tFrozen) / 1e6, imagesBytes, timings: ordered(timings), remoteCalls: remoteCalls.count - calls0, remoteStops: remoteCalls.stops - stops0, lazy,
  };
}

/**
 * dump --lazy-pages: the images are complete but for the lazy pages; serve
 * them from the frozen tree until the restorer has them all (then the tree is
 * killed, as after any dump). If the transfer breaks off, the restored copy
 * dies with its server (it never runs on holes), so the tree here is let go:
 * it is then the only one left, and runs on with all its memory.
 */
function serveLazy(ctx: DumpCtx, timings: Record<string, number>, failed: () => void): LazyServeStats {
  const o = ctx.opts.lazyPages!;
  log.info(`lazy pages: ${ctx.lazySource!.pages} pages to serve on port ${ctx.lazySource!.port}`);
  // Said once the images are complete: a restorer may start from then on.
  o.onListening?.(ctx.lazySource!.port);
  try {
    return timed(timings, 'lazy-serve', () => ctx.lazySource!.serve(o.onConnected));
  } catch (e) {
    failed();
    const why = (e as Error).message;
    throw new StasisError((e as StasisError).code ?? ErrorCodes.IO_ERROR, `${why}; the tree runs on here (the restored copy is killed by its lazy-pages server)`);
  }
}

/** Kill the tree (a complete dump without -R) or let it go; units tidy up around that. */
function finishDump(ctx: DumpCtx, tree: FrozenProcess[], done: boolean): void {
  const how = { done, kill: done && !ctx.opts.leaveRunning };
  const touched = UNITS.filter((u) => u.beforeRelease || u.afterRelease);
  const errors: unknown[] = [];
  const attempt = (f: () => void) => { try { f(); } catch (e) { errors.push(e); } };
  for (const u of touched) if (u.beforeRelease) attempt(() => u.beforeRelease!(ctx, ctx.state(u), how));
  // Children first: a parent killed first could reap (or re-parent) them under us.
  for (const frozen of [...tree].reverse()) attempt(() => (how.kill ? killFrozen(frozen) : release(frozen)));
  for (const u of touched) if (u.afterRelease) attempt(() => u.afterRelease!(ctx, ctx.state(u), how));
  if (errors.length && done) throw errors[0];
}
