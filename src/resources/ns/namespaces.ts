// Namespaces of the tree: which are its own (to re-create on restore) and
// which it shares with us (inherited), their ids in ids-PID.img and the
// inventory, and how the root is cloned. Model as criu's: every process of
// the tree is in the root's namespaces; the root's namespace of a kind is
// either ours (shared: left alone, inherited at restore) or its own (dumped,
// created once for the whole tree). Nested namespaces and user namespaces
// are refused. Each kind's state is another unit (uts.ts...).
import { abi } from '../../sys';
import { StasisError, ErrorCodes } from '../../errors';
import { nsId, NS_NAMES, type NsKind } from '../../proc/ns';
import type { Msg } from '../../images/schema';
import { defineUnit } from '../../unit/unit';
import type { ProcessDump } from '../../unit/dump-ctx';

const { CLONE } = abi;

/** The kinds recorded in task_kobj_ids_entry, in criu's order, with their fields and clone flags. */
export const KINDS = [
  { kind: 'pid', field: 'pid_ns_id', flag: CLONE.NEWPID },
  { kind: 'net', field: 'net_ns_id', flag: CLONE.NEWNET },
  { kind: 'ipc', field: 'ipc_ns_id', flag: CLONE.NEWIPC },
  { kind: 'uts', field: 'uts_ns_id', flag: CLONE.NEWUTS },
  { kind: 'time', field: 'time_ns_id', flag: CLONE.NEWTIME },
  { kind: 'mnt', field: 'mnt_ns_id', flag: CLONE.NEWNS },
  { kind: 'user', field: 'user_ns_id', flag: CLONE.NEWUSER },
  { kind: 'cgroup', field: 'cgroup_ns_id', flag: CLONE.NEWCGROUP },
] as const;
export type IdsKind = (typeof KINDS)[number]['kind'];
type IdsField = (typeof KINDS)[number]['field'];
type Ids = Msg<'task_kobj_ids_entry'>;

/** Kinds whose own namespace stasis carries; others are refused at dump. */
export const CARRIED: ReadonlySet<IdsKind> = new Set<IdsKind>(['pid', 'uts', 'time', 'ipc', 'mnt', 'net', 'cgroup']);

interface DumpState {
  /** Our namespaces' ids (the inventory's root_ids), then the tree's own. */
  rootIds: Partial<Record<IdsField, number>>;
  /** The kinds whose namespace is the tree's own. */
  own: Set<IdsKind>;
  /** Kernel namespace inode → image id. */
  ids: Map<number, number>;
}

function describe(pid: number, kind: NsKind): string {
  return `${NS_NAMES[kind]} namespace ${nsId(pid, kind) ?? '?'}`;
}

/** Every process and thread in the root's namespaces; supported kinds only; ids assigned. */
function inspectNamespaces(pds: ProcessDump[], st: DumpState): void {
  const root = pds[0];
  let next = 1;
  const idOf = (ino: number) => { if (!st.ids.has(ino)) st.ids.set(ino, next++); return st.ids.get(ino)!; };
  for (const { kind, field } of KINDS) {
    const ours = nsId('self', kind);
    if (ours !== undefined) st.rootIds[field] = idOf(ours);
  }
  for (const { kind } of KINDS) {
    const theirs = nsId(root.pid, kind), ours = nsId('self', kind);
    if (theirs === undefined || theirs === ours) continue;
    if (!CARRIED.has(kind)) {
      throw new StasisError(ErrorCodes.UNSUPPORTED, `pid ${root.pid} lives in its own ${describe(root.pid, kind)}; ${NS_NAMES[kind]} namespaces are not supported yet`);
    }
    st.own.add(kind);
  }
  for (const pd of pds) {
    for (const tid of pd.frozen.threads) {
      for (const { kind } of KINDS) {
        if (nsId(tid, kind) !== nsId(root.pid, kind)) {
          throw new StasisError(ErrorCodes.UNSUPPORTED, `${tid === pd.pid ? 'pid' : 'thread'} ${tid} is in another ${NS_NAMES[kind]} namespace than the root ${root.pid} of the tree (nested namespaces); not supported`);
        }
      }
      // Namespaces entered by the next children only: the tree would change under us.
      for (const [kind, next2] of [['pid', 'pid_for_children'], ['time', 'time_for_children']] as const) {
        if (nsId(tid, next2) !== undefined && nsId(tid, next2) !== nsId(tid, kind)) {
          throw new StasisError(ErrorCodes.UNSUPPORTED, `${tid === pd.pid ? 'pid' : 'thread'} ${tid} has unshared a ${NS_NAMES[kind]} namespace its children would enter (${describe(tid, next2)}); not supported`);
        }
      }
    }
  }
  if (st.own.has('pid') && root.vpid !== 1) {
    throw new StasisError(ErrorCodes.UNSUPPORTED, `pid ${root.pid} is in a pid namespace of its own but is not its init (pid ${root.vpid} there): dump the init of the namespace`);
  }
  for (const pd of pds) {
    for (const { kind, field } of KINDS) {
      const ino = nsId(pd.pid, kind);
      if (ino !== undefined) pd.ids[field] = idOf(ino);
    }
  }
}

export const namespacesUnit = defineUnit({
  name: 'namespaces',
  dumpState: (): DumpState => ({ rootIds: {}, own: new Set(), ids: new Map() }),
  dumpPhases: [{ name: 'namespaces', before: ['parasite'], once: (ctx, st) => inspectNamespaces(ctx.processes, st) }],
  /** The kinds to re-create (the root's namespace differs from the dumper's). */
  load(ld): Set<IdsKind> {
    const root = ld.processes[0];
    const rootIds = ld.inventory.root_ids;
    const own = new Set<IdsKind>();
    for (const { kind, field } of KINDS) {
      const want = root.ids[field];
      if (want === undefined || rootIds?.[field] === undefined || want === rootIds[field]) continue;
      if (!CARRIED.has(kind)) throw new StasisError(ErrorCodes.BAD_IMAGE, `${ld.images.path(`ids-${root.pid}.img`)}: the tree has a ${kind} namespace of its own; not supported`);
      own.add(kind);
    }
    for (const p of ld.processes) {
      for (const { kind, field } of KINDS) {
        if ((p.ids as Ids)[field] !== (root.ids as Ids)[field]) throw new StasisError(ErrorCodes.BAD_IMAGE, `${ld.images.path(`ids-${p.pid}.img`)}: pid ${p.pid} is in another ${kind} namespace than the root (nested namespaces); not supported`);
      }
    }
    if (own.has('pid') && root.pid !== 1) throw new StasisError(ErrorCodes.BAD_IMAGE, `${ld.images.path('pstree.img')}: the root of a pid namespace of its own must be pid 1 there, not ${root.pid}`);
    return own;
  },
  restorePhases: [{
    // The root is born in the tree's own namespaces (time excepted: see time.ts).
    name: 'namespaces', stage: 'stub',
    once(ctx, own) {
      for (const { kind, flag } of KINDS) if (own.has(kind) && kind !== 'time') ctx.rootClone.flags |= flag;
      if (own.has('pid')) {
        // The init of a new pid namespace is 1 there; we see it under any free pid.
        ctx.rootClone.setTid = [1];
        ctx.ownPidNs = true;
      }
    },
  }],
});

/** The inventory's root_ids: our namespaces (a dump without namespaces writes ids 1-4 only). */
export function inventoryRootIds(st: DumpState, root: Ids): Ids {
  return { ...root, ...st.rootIds };
}
