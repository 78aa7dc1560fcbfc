// Explicit restore state, passed to every resource's restore half.
import type { Checkpoint, ProcessImage } from './load';
import type { RemoteTask } from './remote';

export interface RestoreOptions {
  dir: string;
  detach: boolean;
  skipFileCheck?: boolean;
  /** A shell job: terminal fds get stasis's own terminal (criu -j). */
  shellJob?: boolean;
  /** Failure injection for tests (STASIS_FAIL_AT=phase or phase:kill). */
  failAt?: string;
}

export interface RestoreCtx {
  opts: RestoreOptions;
  ckpt: Checkpoint;
  /** Every process being rebuilt, parents before children. */
  tasks: Map<number, TaskRestore>;
  /** Where each restored file (open file description) can be fetched from. */
  fileHolders: Map<number, { pid: number; fd: number }>;
  /** Pipes created so far: both ends, parked in the creating process. */
  pipes: Map<number, { pid: number; r: number; w: number }>;
  /** Both ends of connected unix socket pairs, by socket inode, parked in their creator. */
  sockPairs: Map<number, { pid: number; fd: number }>;
  /** Deleted files re-created for their openers, by ghost id: unlinked in files-cleanup. */
  ghostFiles: Map<number, string>;
  /** memfds re-created so far, by inode id, parked in their creator. */
  memfds: Map<number, { pid: number; fd: number }>;
  /** A read-write opener of each FIFO (by pipe id) per process, parked. */
  fifoKeepers: Map<number, { pid: number; fd: number }>;
  /** Temporary fds to close once every process has its files. */
  parked: { pid: number; fd: number }[];
  /** Warnings worth telling the user (limits we could not raise...). */
  warnings: string[];
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
  /** VMAs mapped with PROT_WRITE added for filling: mprotect back after pages. */
  reprotect: { start: bigint; len: bigint; prot: number }[];
}
