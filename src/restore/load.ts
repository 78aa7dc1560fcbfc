// Load a checkpoint and check it whole before anything is created: the
// inventory, the tree and each thread's core entry here; every unit's own
// images through its `load` (in loadAfter order); then, for a restore, the
// units' host checks (`validate`: files still there...).
import { tally } from '../log';
import { StasisError, ErrorCodes } from '../errors';
import { ImageReader } from '../images/image';
import { IMG_VERSION, MARCH, TASK_STATE } from '../images/criu';
import type { Msg } from '../images/schema';
import { order } from '../unit/order';
import type { Checkpoint, LoadOptions, ProcessImage, ZombieImage } from '../unit/checkpoint';
import type { AnyUnit, Unit } from '../unit/unit';
import { UNITS } from '../resources/registry';

function bad(file: string, msg: string): StasisError {
  return new StasisError(ErrorCodes.BAD_IMAGE, `${file}: ${msg}`);
}

const MAX_PID = 0x3fffff; // PID_MAX_LIMIT on 64-bit

function loadTree(images: ImageReader): { processes: ProcessImage[]; zombies: ZombieImage[] } {
  const file = images.path('pstree.img');
  const tree = images.read('pstree.img', 'PSTREE', 'pstree_entry');
  if (tree.length === 0) throw bad(file, 'no processes');
  const seen = new Set<number>();
  const zombies: ZombieImage[] = [];
  const processes = tree.flatMap((t): ProcessImage[] => {
    const tids = t.threads?.length ? t.threads : [t.pid];
    for (const id of [t.pid, t.ppid, t.pgid, t.sid, ...tids]) if (id > MAX_PID) throw bad(file, `pid ${id} is out of range`);
    if (tids[0] !== t.pid) throw bad(file, `pid ${t.pid}: the leader is not the first of its threads`);
    for (const tid of tids) {
      if (seen.has(tid)) throw bad(file, `pid ${tid} appears twice`);
      seen.add(tid);
    }
    const leader = images.one(`core-${t.pid}.img`, 'CORE', 'core_entry');
    const zombie = loadZombie(images, t, leader);
    if (zombie) {
      if (t === tree[0]) throw bad(file, 'the root is a zombie');
      zombies.push(zombie);
      return [];
    }
    const threads = tids.map((tid) => {
      const core = tid === t.pid ? leader : images.one(`core-${tid}.img`, 'CORE', 'core_entry');
      const where = images.path(`core-${tid}.img`);
      if (core.mtype !== MARCH.X86_64) throw bad(where, `architecture ${core.mtype} is not x86-64`);
      if (!core.thread_info) throw bad(where, 'no x86-64 registers');
      if (tid === t.pid && !core.tc) throw bad(where, 'leader core has no task state');
      return { tid, core };
    });
    const ids = images.one(`ids-${t.pid}.img`, 'IDS', 'task_kobj_ids_entry');
    return [{ pid: t.pid, ppid: t.ppid, pgid: t.pgid, sid: t.sid, threads, ids }];
  });
  return { processes, zombies };
}

/** A pstree entry whose core says TASK_DEAD: a zombie (one thread, a wait status, nothing else). */
function loadZombie(images: ImageReader, t: Msg<'pstree_entry'>, core: Msg<'core_entry'>): ZombieImage | undefined {
  if (core.tc?.task_state !== TASK_STATE.DEAD) return undefined;
  const where = images.path(`core-${t.pid}.img`);
  if ((t.threads?.length ?? 1) > 1) throw bad(where, `zombie ${t.pid} has threads`);
  const code = core.tc.exit_code;
  // A wait status: exited (code << 8) or killed by a signal (low 7 bits, 0x80 for a core dump).
  if ((code & 0x7f) === 0 ? code > 0xff00 : ((code & 0x7f) > 64 || code > 0xff)) throw bad(where, `zombie ${t.pid}: exit status ${code} is not one wait(2) reports`);
  return { pid: t.pid, ppid: t.ppid, pgid: t.pgid, sid: t.sid, exitCode: code };
}

/** Zombies: each a child of a live process of the tree, in its session (or leading its own) and in a group that exists or can be made (restore/zombies.ts). */
function checkZombies(file: string, procs: ProcessImage[], zombies: ZombieImage[]): void {
  const byPid = new Map(procs.map((x) => [x.pid, x]));
  for (const z of zombies) {
    const parent = byPid.get(z.ppid);
    if (!parent) throw bad(file, `zombie ${z.pid}: parent ${z.ppid} is not a live process of the tree`);
    if (z.sid !== z.pid && z.sid !== parent.sid) throw bad(file, `zombie ${z.pid}: session ${z.sid} is neither its own nor its parent's; not supported`);
    // A group with no live member is made again by a helper with its id: a free one.
    if (z.pgid !== z.pid && !procs.some((x) => x.pgid === z.pgid) && (byPid.has(z.pgid) || zombies.some((x) => x.pid === z.pgid))) throw bad(file, `zombie ${z.pid}: process group ${z.pgid} has no live member, and its id is a pid of the tree`);
    if (procs.some((x) => x.pgid === z.pid || x.sid === z.pid)) throw bad(file, `zombie ${z.pid} leads a group or session of live processes; not supported`);
  }
}

/**
 * Parents before children; sessions we can re-create: a process either leads
 * its session or shares its parent's (the root may belong to a session
 * outside the tree: it then joins the restorer's, as criu --shell-job does).
 */
function checkTree(file: string, procs: ProcessImage[]): void {
  const byPid = new Map(procs.map((x) => [x.pid, x]));
  procs.forEach((x, i) => {
    if (i === 0) return;
    const parent = byPid.get(x.ppid);
    if (!parent || procs.indexOf(parent) > i) throw bad(file, `pid ${x.pid}: parent ${x.ppid} is not listed before it`);
    if (x.sid !== x.pid && x.sid !== parent.sid) throw bad(file, `pid ${x.pid}: session ${x.sid} is neither its own nor its parent's; not supported`);
    const leader = byPid.get(x.pgid);
    if (leader && leader.sid !== x.sid) throw bad(file, `pid ${x.pid}: process group ${x.pgid} lies in another session`);
    if (!leader && x.pgid !== parent.pgid) throw bad(file, `pid ${x.pid}: process group ${x.pgid} has no member in the tree to re-create it`);
  });
}

export type ReadOptions = LoadOptions;

/** Read and check a whole checkpoint (no host checks: see validateCheckpoint). */
export function loadCheckpoint(dir: string, opts: ReadOptions = {}, units: readonly AnyUnit[] = UNITS, timings: Record<string, number> = {}): Checkpoint {
  const images = new ImageReader(dir, opts.anyOwner ? null : undefined, opts.listing);
  if (!images.exists('inventory.img')) throw bad(images.path('inventory.img'), 'missing: not a complete checkpoint');
  const inventory: Msg<'inventory_entry'> = images.one('inventory.img', 'INVENTORY', 'inventory_entry');
  if (inventory.img_version !== IMG_VERSION) throw bad(images.path('inventory.img'), `unsupported image version ${inventory.img_version}`);
  const { processes, zombies } = loadTree(images);
  checkTree(images.path('pstree.img'), processes);
  checkZombies(images.path('pstree.img'), processes, zombies);
  const loaded = new Map<AnyUnit, unknown>();
  const ckpt: Checkpoint = {
    dir, images, opts, inventory, processes, zombies,
    loaded<L>(u: Unit<unknown, L, unknown>): L {
      if (!loaded.has(u as AnyUnit)) throw new StasisError(ErrorCodes.INTERNAL, `unit ${u.name} read before it was loaded (missing loadAfter?)`);
      return loaded.get(u as AnyUnit) as L;
    },
  };
  const loadOrder = order(units.map((u) => ({ name: u.name, after: u.loadAfter, unit: u })), 'unit loads');
  for (const { unit } of loadOrder) loaded.set(unit, unit.load ? tally(timings, `load.${unit.name}`, () => unit.load!(ckpt)) : undefined);
  return ckpt;
}

/** Host checks of every unit (files present, sizes...), before anything is created. */
export function validateCheckpoint(ckpt: Checkpoint, units: readonly AnyUnit[] = UNITS, timings: Record<string, number> = {}): void {
  for (const u of units) if (u.validate) tally(timings, `validate.${u.name}`, () => u.validate!(ckpt, ckpt.loaded(u)));
}
