// What a restore carries from phase to phase: the options, the checkpoint,
// the processes being rebuilt, and each unit's own restore state.
import type { RemoteTask } from '../compel/remote';
import type { CloneSpec } from '../compel/clone';
import { injectFailure } from '../errors';
import type { Checkpoint, ProcessImage } from './checkpoint';
import { UnitStates, type Unit, type AnyUnit } from './unit';

export interface RestoreOptions {
  dir: string;
  detach: boolean;
  skipFileCheck?: boolean;
  /** A shell job: terminal fds get stasis's own terminal (criu -j). */
  shellJob?: boolean;
  /** criu's --file-locks: accepted, changes nothing (locks are always restored). */
  fileLocks?: boolean;
  /** criu's --tcp-close: TCP connections of the images come back closed. */
  tcpClose?: boolean;
  /** As criu: ignored (with a warning) when it differs from the dump's; the dump's lock is the one removed. */
  networkLock?: 'nftables' | 'iptables' | 'skip';
  /** Trust image files of any owner (default: ours and root's). */
  anyOwner?: boolean;
  /** The tree's root directory here (criu --root): where its mount namespace's root is bound from. */
  root?: string;
  /** What may be done to cgroups (criu --manage-cgroups; default soft). */
  manageCgroups?: import('../resources/ns/cgroup').CgroupMode;
  /** criu's --external forms (mnt[KEY]:PATH: where the mount dumped as external KEY is bound from). */
  external?: string[];
  /** criu's --inherit-fd fd[N]:KEY: our fd N stands for what the images name KEY (an external namespace). */
  inheritFd?: string[];
  /** criu's --join-ns KIND:PATH: the tree joins that existing namespace. */
  joinNs?: string[];
  /** criu's --cgroup-root (see LoadOptions). */
  cgroupRoots?: import('../resources/ns/cgroup').CgroupRoot[];
  /** Verify every file against the checkpoint's digest first (default true). */
  verify?: boolean;
  /** criu --lazy-pages: private anonymous memory is served on demand (userfaultfd) and streamed in after the tree runs. */
  lazyPages?: boolean;
  /** With lazyPages: fetch the pages the images leave out (PE_LAZY) from the source's server (see LoadOptions). */
  lazyRemote?: import('../pageserver/lazy-client').LazyRemote;
  /** Failure injection for tests (STASIS_FAIL_AT=phase or phase:kill). */
  failAt?: string;
  /** Called at the named points an orchestrator waits for (see NotifyHook); throwing aborts the restore. */
  notify?: import('./dump-ctx').NotifyHook;
}

/** One process being rebuilt. */
export interface TaskRestore {
  img: ProcessImage;
  /** The leader, driven through the trampoline. */
  task: RemoteTask;
  /** Every thread once created (the leader included), by tid. */
  threads: Map<number, RemoteTask>;
  /** The live task's XSAVE size (to rebuild the image's FPU state into). */
  xsaveSize: number;
}

export class RestoreCtx {
  /** Every process being rebuilt, parents before children, by its pid in the images. */
  readonly tasks = new Map<number, TaskRestore>();
  /** The stub, until the root is cloned from it (phases of the 'stub' stage). */
  stub?: RemoteTask;
  /** How the root is cloned from the stub: 'stub' phases add namespaces (CLONE_NEW*) and ids. */
  rootClone: CloneSpec;
  /** The tree lives in a pid namespace of its own: ids in the images are not ours. */
  ownPidNs = false;
  /**
   * Prefix that turns a path of the tree into one we can use ('' when the
   * tree shares our mount namespace; its root's /proc/PID/root when it has
   * its own).
   */
  fsRoot = '';
  /** Warnings worth telling the user (limits we could not raise...). */
  readonly warnings: string[] = [];
  private readonly states = new UnitStates((u) => u.restoreState?.(this));

  constructor(readonly opts: RestoreOptions, readonly ckpt: Checkpoint, rootClone: CloneSpec) {
    this.rootClone = rootClone;
  }

  /** This unit's state for this restore. */
  state<R>(u: Unit<unknown, unknown, R>): R { return this.states.get<R>(u as AnyUnit); }

  /** Units whose restore state exists (for cleanup). */
  touched(): AnyUnit[] { return this.states.units(); }

  loaded<L>(u: Unit<unknown, L, unknown>): L { return this.ckpt.loaded(u); }

  step(name: string): void {
    injectFailure(this.opts.failAt, name, 'restore phase');
  }
}
