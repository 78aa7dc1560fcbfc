// A resource unit: everything stasis does for one kind of state, declared in
// one place — its dump half (phases, and what it asks the task through the
// parasite), the images it writes, how it loads and validates them, the
// restore phases it contributes (with their dependencies), cleanup when a
// restore fails, and how `show` describes it. Kinds of open file (pipes,
// sockets, eventfd...) are units with a `file` part.
//
// Per-kind state lives in the unit: each dump gets a fresh state from
// `dumpState`, each restore from `restoreState`, and the loaded images are
// what `load` returned. Phases receive them; nothing is added to the
// contexts for a new kind. All units are listed once, in resources/registry.ts.
import type * as fs from 'node:fs';
import type { FdInfo } from '../proc/proc';
import type { Msg } from '../images/schema';
import type { RemoteTask, RemoteCall } from '../compel/remote';
import type { Ordered } from './order';
import type { DumpCtx, ProcessDump } from './dump-ctx';
import type { RestoreCtx, TaskRestore } from './restore-ctx';
import type { Loading } from './checkpoint';

export interface DumpPhase<D> extends Ordered {
  /** Once per process of the tree, parents first. */
  each?(ctx: DumpCtx, pd: ProcessDump, st: D): void;
  /** Once for the whole tree (after `each`, when both are given). */
  once?(ctx: DumpCtx, st: D): void;
}

export interface RestorePhase<L, R> extends Ordered {
  /**
   * 'stub': before the root exists (ctx.stub is the stub: what the root must
   * be born with: namespaces, cgroups); 'root': the root exists, its children
   * not yet (what they must inherit: mounts, hostname...); 'tree' (default):
   * every process exists. Phases are ordered within their stage.
   */
  stage?: 'stub' | 'root' | 'tree';
  /**
   * After every phase that does not say this itself: for what takes away the
   * privileges the other phases use (scheduling, then credentials last).
   */
  afterAll?: boolean;
  /** Once per process, parents first; every process finishes a phase before the next phase starts. */
  each?(ctx: RestoreCtx, tr: TaskRestore, l: L, st: R): void;
  once?(ctx: RestoreCtx, l: L, st: R): void;
}

/** An fd being dumped. */
export interface FdDesc {
  pid: number;
  fd: number;
  /** readlink of /proc/PID/fd/N */
  link: string;
  st: fs.Stats;
  info: FdInfo;
  /** File status flags (O_ACCMODE, O_APPEND, O_NONBLOCK...), without O_CLOEXEC. */
  flags: number;
  /** A file in flight (`pid` is ours): the process whose fd numbers an epoll's targets are. */
  targetsOf?: number;
}

/** Members of file_entry that hold a kind's entry. */
export type FileField = Exclude<keyof Msg<'file_entry'>, 'type' | 'id'>;
export type FileMsg<F extends FileField> = NonNullable<Msg<'file_entry'>[F]>;

/**
 * A kind of open file. `match` predicates of all kinds are mutually
 * exclusive (a test checks it), so no kind depends on list order.
 */
export interface FileKind<F extends FileField, D, L, R> {
  /** fd_types value */
  type: number;
  /** file_entry member holding this kind's entry */
  field: F;
  match(d: FdDesc): boolean;
  /** fds opened with O_PATH (a path only, no file operations) go to the kinds saying so, and only there. */
  opath?: boolean;
  /** The member entry for a new file id. */
  dump(ctx: DumpCtx, d: FdDesc, id: number, st: D): FileMsg<F>;
  /** Structural checks while loading (no host access). */
  check?(e: FileMsg<F>, where: string, ld: Loading): void;
  /** Host checks before anything is created (files still there...). */
  validate?(e: FileMsg<F>, where: string, ld: Loading, l: L): void;
  /** A new fd in the task for this file. */
  open(ctx: RestoreCtx, tr: TaskRestore, e: FileMsg<F>, st: R, l: L): number;
  /** Once every fd of the task is in place (epoll needs its targets). */
  finish?(ctx: RestoreCtx, tr: TaskRestore, e: FileMsg<F>, fd: number, st: R): void;
  /** One line for `show`. */
  describe?(e: FileMsg<F>, files: ReadonlyMap<number, Msg<'file_entry'>>): string;
}

export type { RemoteCall };

/**
 * A unit's declared remote calls (parasiteCalls): `done` gets their raw
 * results (-errno on failure), in order, once the batch has run; `t` for
 * follow-up calls that depend on them (rare: each is a stop of its own).
 */
export interface ParasiteCalls {
  calls: RemoteCall[];
  done(results: bigint[], t: RemoteTask): void;
}

export interface Unit<D = unknown, L = unknown, R = unknown> {
  readonly name: string;

  // ---- dump
  /** Fresh per-dump state. */
  dumpState?(ctx: DumpCtx): D;
  /** Before the tree is frozen: what can be refused without touching it (options, parent images). */
  prepare?(ctx: DumpCtx, st: D): void;
  /**
   * Calls to run inside the task, once per process, declared rather than
   * made: every unit's (and the leader's thread calls) run as one batch, one
   * stop of the frozen task, before any `parasite` hook. For calls that do
   * not depend on each other's results.
   */
  parasiteCalls?(ctx: DumpCtx, pd: ProcessDump, st: D): ParasiteCalls;
  /** The same for each thread (the leader too: batched with the process's calls). */
  parasiteThreadCalls?(ctx: DumpCtx, pd: ProcessDump, tid: number, st: D): ParasiteCalls;
  /** Run inside the task, once per process, during the parasite phase (calls that depend on others' results). */
  parasite?(ctx: DumpCtx, pd: ProcessDump, t: RemoteTask, st: D): void;
  /** Run inside each thread (the leader too), during the parasite phase. */
  parasiteThread?(ctx: DumpCtx, pd: ProcessDump, tid: number, t: RemoteTask, st: D): void;
  dumpPhases?: DumpPhase<D>[];
  /**
   * The dump is over (`done`: complete) and the tree is about to be killed
   * (`kill`) or let go. Runs whether the dump succeeded or not, before any
   * task moves again.
   */
  beforeRelease?(ctx: DumpCtx, st: D, how: { done: boolean; kill: boolean }): void;
  /** The tree has been killed or let go. */
  afterRelease?(ctx: DumpCtx, st: D, how: { done: boolean; kill: boolean }): void;

  // ---- load (restore, show, check-images)
  /** Units whose loaded images this one's `load` reads. */
  loadAfter?: string[];
  /** Read and check this unit's images; throws BAD_IMAGE naming the file. */
  load?(ld: Loading): L;
  /** Host-dependent checks before anything is created (restore only). */
  validate?(ld: Loading, l: L): void;

  // ---- restore
  restoreState?(ctx: RestoreCtx): R;
  restorePhases?: RestorePhase<L, R>[];
  /** After every restore, successful (`ok`) or not: remove what only the restore needed. */
  cleanup?(ctx: RestoreCtx, st: R, ok: boolean): void;

  // ---- kinds of open file
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  file?: FileKind<any, D, L, R>;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type AnyUnit = Unit<any, any, any>;

/** Declare a unit; its state and loaded types are inferred from its hooks. */
export function defineUnit<D = undefined, L = undefined, R = undefined>(u: Unit<D, L, R>): Unit<D, L, R> {
  return u;
}

/** Declare a file kind's unit: the file part's entry type follows its `field`. */
export function defineFileUnit<F extends FileField, D = undefined, L = undefined, R = undefined>(
  u: Omit<Unit<D, L, R>, 'file'> & { file: FileKind<F, D, L, R> },
): Unit<D, L, R> {
  return u;
}

/** Each unit's state for one dump or restore, made on first use. */
export class UnitStates {
  private readonly states = new Map<AnyUnit, unknown>();
  constructor(private readonly make: (u: AnyUnit) => unknown) {}
  get<T>(u: AnyUnit): T {
    if (!this.states.has(u)) this.states.set(u, this.make(u));
    return this.states.get(u) as T;
  }
  /** Units whose state exists. */
  units(): AnyUnit[] { return [...this.states.keys()]; }
}
