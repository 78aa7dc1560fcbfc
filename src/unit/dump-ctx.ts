// What a dump carries from phase to phase: the options, the frozen tree,
// where images go, and each unit's own state (created on first use).
import type { FrozenProcess } from '../freeze';
import type { Stat } from '../proc/proc';
import type { Msg } from '../images/schema';
import type { ImageKind } from '../images/magic';
import type { Part } from '../images/image';
import type { DigestEntry } from '../images/digest';
import { injectFailure } from '../errors';
import { UnitStates, type Unit, type AnyUnit } from './unit';

export interface DumpOptions {
  dir: string;
  leaveRunning: boolean;
  /** Unix datagram sockets connected outside the tree are re-connected by name (criu --ext-unix-sk). */
  extUnixSk?: boolean;
  /** A shell job: its terminal fds are the shell's (criu -j). */
  shellJob?: boolean;
  /** Largest deleted file whose contents go into the image (bytes). */
  ghostLimit?: number;
  /** Take established TCP connections (TCP_REPAIR). */
  tcpEstablished?: boolean;
  /** criu's --tcp-close: TCP connections (any state) are dumped as sockets only, to come back closed; no lock. */
  tcpClose?: boolean;
  /**
   * How established TCP connections are locked (their packets dropped) from just
   * before their queues are read until their restore (criu --network-lock); default:
   * nftables, else iptables, whichever works here.
   */
  networkLock?: 'nftables' | 'iptables' | 'skip';
  /** criu's --file-locks: accepted, changes nothing (locks are always taken). */
  fileLocks?: boolean;
  /** criu's --external forms (mnt[MOUNTPOINT]:KEY: a mount bound at restore from what KEY is mapped to). */
  external?: string[];
  /**
   * The previous pre-dump or dump (criu --prev-images-dir, relative to `dir`):
   * pages unchanged since are referred to it (PE_PARENT) rather than copied.
   */
  prevImagesDir?: string;
  /**
   * With prevImagesDir naming a tracked pre-dump: copy what was written since
   * in one more round while the tree runs, then dump on that round
   * (dump/precopy.ts). Default: one frozen pass.
   */
  preCopy?: boolean;
  /** Keep tracking memory changes after a dump that leaves the tree running (criu --track-mem), for a next incremental dump. */
  trackMem?: boolean;
  /** A pre-dump: memory only, copied while the tree runs, write tracking armed. */
  preDump?: boolean;
  /** Failure injection for tests: "phase" or "phase:kill" (STASIS_FAIL_AT). */
  failAt?: string;
  /** Send the pages to this page server (criu --page-server --address --port); the other images are written in `dir`. */
  pageServer?: { address: string; port: number } | { fd: number; where: string };
  /**
   * Post-copy (criu dump --lazy-pages --address --port): private anonymous
   * pages are not written but served from the frozen tree to the restorer
   * (pageserver/lazy-source.ts); the tree is killed once it has them all.
   */
  lazyPages?: { address: string; port: number; /** The images are complete, the pages served from now on (on `port`). */ onListening?: (port: number) => void; onConnected?: (peer: string) => void };
  /** Called at the named points an orchestrator waits for (criu's notify scripts); throwing aborts the dump. */
  notify?: NotifyHook;
}

/**
 * A dump or restore tells whoever drives it where it is (criu's action
 * scripts: runc and podman act on them over `criu swrk`). Dump: pre-dump,
 * network-lock (tree frozen), post-dump (images complete, tree not yet
 * killed or let go), network-unlock (only if the tree goes on). Restore:
 * pre-restore, setup-namespaces and post-restore (with the root's pid as we
 * see it), post-setup-namespaces, network-unlock, pre-resume, post-resume;
 * criu's orphan-pts-master would pass an fd along.
 */
export type NotifyHook = (point: string, pid?: number, fd?: number) => void;

/** Where a dump's images go (a private staging directory until the dump is complete). */
export interface ImageSink {
  /** A whole image file. */
  write(file: string, kind: ImageKind, parts: Part[]): void;
  /** A new raw file (pages), written by appending through it (never by fd: it is hashed for the digest as it goes). */
  create(file: string): RawImage;
  /** A symbolic link (criu's `parent` link to the previous images directory); not hashed: what it names is pinned by a file that is. */
  symlink(name: string, target: string): void;
  /** A file of the checkpoint written elsewhere (by a page server): listed in the digest with the size and SHA-256s of what was sent. */
  remote(entry: DigestEntry): void;
}

/** A raw image being written; `close` never throws (a problem shows at commit). */
export interface RawImage {
  readonly path: string;
  /** Append `len` bytes of `data` from `off` (default: all of it). */
  write(data: Buffer, off?: number, len?: number): void;
  /** Append spans (offset, length pairs) of `buf`; a job (> 0) if written behind: `buf` unchanged until settle(job). */
  writeSpans(buf: Buffer, spans: number[]): number;
  /** Wait for write-behind jobs up to `job` (default: all). */
  settle(job?: number): void;
  /** The fd, for a writer stasis does not see (a child's stdout): the file is then hashed whole at close. */
  handOver(): number;
  close(): void;
}

/** core-TID.img being put together: each unit fills its part, the core unit writes it. */
export interface CoreDraft {
  mtype: number;
  thread_info?: Msg<'thread_info_x86'>;
  tc?: Partial<Msg<'task_core_entry'>>;
  thread_core?: Partial<Msg<'thread_core_entry'>>;
}

/**
 * One process of the tree while frozen: what every unit may read. `pid` and
 * thread ids are ours (for /proc, ptrace...); images hold the ids as seen in
 * the tree's own pid namespace (`vpid`, `vtids`), equal to ours when the tree
 * shares our pid namespace.
 */
export interface ProcessDump {
  pid: number;
  vpid: number;
  /** Process group and session as the tree sees them (0: outside its pid namespace). */
  vpgid: number;
  vsid: number;
  /** Every thread: our tid → the tree's. */
  vtids: Map<number, number>;
  frozen: FrozenProcess;
  stat: Stat;
  status: Map<string, string>;
  ids: Msg<'task_kobj_ids_entry'>;
  /** core entries by thread id (leader first). */
  core: Map<number, CoreDraft>;
  /** fds of stasis's own in the task (memory tracking's userfaultfd): never dumped as the task's files. */
  ownFds?: number[];
}

/** A child of the tree that has exited, not yet waited for (dump/zombies.ts). */
export interface ZombieDump {
  pid: number; ppid: number; vpid: number; vpgid: number; vsid: number;
  /** As wait(2) reports it. */
  exitCode: number;
  comm: string;
}

export class DumpCtx {
  /** The tree, parents before children (filled once frozen). */
  processes: ProcessDump[] = [];
  /** Its zombies (dead children not yet waited for). */
  zombies: ZombieDump[] = [];
  /** Bytes and pages of page data written (for reports and benchmarks). */
  pagesBytes = 0;
  pagesCount = 0;
  /** Milliseconds per step, by name; sub-steps as "step.part" (the parasite's, by unit). */
  readonly timings: Record<string, number> = {};
  private nextPagesId = 1;
  /** The page server connection (opts.pageServer), from before the freeze until the images are complete. */
  pageXfer?: import('../pageserver/client').PageXfer;
  /** dump --lazy-pages: the server of the pages left out, listening from before the freeze. */
  lazySource?: import('../pageserver/lazy-source').LazySourceServer;
  private readonly states = new UnitStates((u) => u.dumpState?.(this));

  constructor(readonly opts: DumpOptions, readonly out: ImageSink) {}

  /** This unit's state for this dump. */
  state<D>(u: Unit<D, unknown, unknown>): D { return this.states.get<D>(u as AnyUnit); }

  allocPagesId(): number { return this.nextPagesId++; }

  write(file: string, kind: ImageKind, parts: Part[]): void { this.out.write(file, kind, parts); }

  /** Failure injection point: tests force a failure (or our own SIGKILL) here. */
  step(name: string): void {
    injectFailure(this.opts.failAt, name, 'dump phase');
  }
}
