// Explicit restore state, passed to every resource's restore half.
import type { Checkpoint, ProcessImage } from './load';
import type { RemoteTask } from './remote';

export interface RestoreOptions {
  dir: string;
  detach: boolean;
  skipFileCheck?: boolean;
  /** Failure injection for tests (STASIS_FAIL_AT=phase). */
  failAt?: string;
  log?: (msg: string) => void;
}

export interface RestoreCtx {
  opts: RestoreOptions;
  ckpt: Checkpoint;
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
  /** Address of a `syscall` instruction in the restored task (vdso), for the last calls. */
  syscallInsn?: bigint;
}
