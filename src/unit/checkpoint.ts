// A checkpoint as loaded: the tree and each thread's core entry (which every
// unit reads), and each unit's own loaded images.
import type { Msg } from '../images/schema';
import type { ImageReader } from '../images/image';
import type { DigestListing } from '../images/digest';
import type { Unit } from './unit';

export interface ThreadImage { tid: number; core: Msg<'core_entry'> }

export interface ProcessImage {
  pid: number; ppid: number; pgid: number; sid: number;
  /** The leader first. */
  threads: ThreadImage[];
  ids: Msg<'task_kobj_ids_entry'>;
}

/** A zombie of the tree: re-created by its parent, exiting at once as it did. */
export interface ZombieImage {
  pid: number; ppid: number; pgid: number; sid: number;
  /** As wait(2) reports it: a signal in the low 7 bits, else the exit code << 8. */
  exitCode: number;
}

export interface LoadOptions {
  /** Do not refuse files whose size changed since the dump. */
  skipFileCheck?: boolean;
  /** Terminal fds are allowed (they get stasis's terminal). */
  shellJob?: boolean;
  /** criu's --file-locks: accepted, changes nothing (locks are always restored). */
  fileLocks?: boolean;
  /** criu's --tcp-close: TCP connections of the images come back closed (a socket shut both ways, not connected). */
  tcpClose?: boolean;
  /** The tree's root directory here (criu --root). */
  root?: string;
  /** criu's --external forms (mnt[KEY]:PATH). */
  external?: string[];
  /** What may be done to cgroups (criu --manage-cgroups; default soft). */
  manageCgroups?: import('../resources/ns/cgroup').CgroupMode;
  /** criu's --inherit-fd fd[N]:KEY: our fd N stands for what the images name KEY (an external namespace). */
  inheritFd?: string[];
  /** criu's --join-ns KIND:PATH: the tree joins that existing namespace. */
  joinNs?: string[];
  /** criu's --cgroup-root: the root's cgroup per hierarchy (no ctrl: every other one), its subtree moved along. */
  cgroupRoots?: import('../resources/ns/cgroup').CgroupRoot[];
  /** Trust image files of any owner (default: ours and root's). */
  anyOwner?: boolean;
  /** The verified digest (images/digest.ts): read only the files it lists; parent images are verified too. */
  listing?: DigestListing;
  /**
   * Post-copy (restore --lazy-pages --page-server): the connection to the
   * source's lazy pages server; pagemap entries PE_LAZY (pages not in the
   * images) are fetched from it. Without it such entries are refused.
   */
  lazyRemote?: import('../pageserver/lazy-client').LazyRemote;
}

/** What a unit's load and validate hooks see. */
export interface Loading {
  readonly dir: string;
  readonly images: ImageReader;
  readonly opts: LoadOptions;
  readonly inventory: Msg<'inventory_entry'>;
  /** Parents before children (pstree order). */
  readonly processes: readonly ProcessImage[];
  /** Zombies (pstree entries whose core says TASK_DEAD), each after its parent. */
  readonly zombies: readonly ZombieImage[];
  /** What a unit loaded earlier (declare it in loadAfter). */
  loaded<L>(u: Unit<unknown, L, unknown>): L;
}

export interface Checkpoint extends Loading {}
