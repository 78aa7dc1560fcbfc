// Explicit dump state, passed to every resource's dump half.
import type { FrozenProcess } from '../freeze';
import type { Stat } from '../proc/proc';
import type { Entry } from '../images/image';
import { injectFailure } from '../errors';
import { unixSockets, inetSockets, type UnixDiag, type InetDiag } from '../proc/sockdiag';

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
  /** Failure injection for tests: "step" or "step:kill" (STASIS_FAIL_AT). */
  failAt?: string;
}

/** What one process of the tree yields while frozen, shared between resources. */
export interface ProcessDump {
  pid: number;
  frozen: FrozenProcess;
  stat: Stat;
  status: Map<string, string>;
  ids: { vm_id: number; files_id: number; fs_id: number; sighand_id: number };
  /** Filled by the parasite session. */
  parasite: ParasiteFacts;
  /** Per-thread facts keyed by tid. */
  threads: Map<number, ThreadFacts>;
  /** pages-N.img id of this process. */
  pagesId: number;
  /** mm_entry, filled by the memory resource. */
  mm: Entry;
}

export interface ParasiteFacts {
  brk: bigint;
  dumpable: number;
  secbits: number;
  childSubreaper: boolean;
  sigactions: Entry[];
  itimers: { real: Entry; virt: Entry; prof: Entry };
  posixTimers: Entry[];
}

export interface ThreadFacts {
  clearTidAddr: bigint;
  sas: Entry;
  pdeathSig: number;
}

export class DumpCtx {
  readonly opts: DumpOptions;
  private nextFileId = 1;
  private nextPagesId = 1;
  /** files.img entries, in id order. */
  readonly files: Entry[] = [];
  private readonly fileKeys = new Map<string, number>();
  /** Every fd seen so far, to find open file descriptions shared across fds and processes. */
  readonly openFiles: { pid: number; fd: number; dev: number; ino: number; id: number }[] = [];
  /** Queued data of each pipe and FIFO (by inode), read once. */
  readonly pipeData = new Map<number, { data: Buffer; size: number }>();
  readonly fifoData = new Map<number, { data: Buffer; size: number }>();
  /** Queued data of sockets (by file id): byte stream or datagrams, with their source address. */
  readonly skQueues: { id: number; data: Buffer; addr?: Buffer }[] = [];
  /** sock_diag answers, asked once per dump. */
  private unixDiagCache?: Map<number, UnixDiag>;
  private inetDiagCache = new Map<string, Map<number, InetDiag>>();
  unixDiag(): Map<number, UnixDiag> { return (this.unixDiagCache ??= unixSockets()); }
  inetDiag(family: number, proto: number): Map<number, InetDiag> {
    const k = `${family}/${proto}`;
    let m = this.inetDiagCache.get(k);
    if (!m) { m = inetSockets(family, proto); this.inetDiagCache.set(k, m); }
    return m;
  }
  /** Unix sockets dumped, by inode, with their peer inode: peers must be in the tree too. */
  readonly unixSocks = new Map<number, { pid: number; fd: number; peer: number; type: number }>();
  /** Deleted files open by the tree: their contents go into ghost-file-N.img. */
  readonly ghosts: { origId: number; remapId: number; entry: Entry; data: Buffer }[] = [];
  /** memfd inodes dumped (memfd.img). */
  readonly memfdInodes: Entry[] = [];
  /** Our copies of TCP sockets held in repair mode until the dump ends. */
  readonly repairSockets: { fd: number; reuse: number }[] = [];
  /** Bytes of page data written (for reports and benchmarks). */
  pagesBytes = 0;
  pagesCount = 0;

  constructor(opts: DumpOptions) {
    this.opts = opts;
  }

  allocPagesId(): number { return this.nextPagesId++; }

  /**
   * A file entry shared by everything that names the same key (an open file
   * description, or a path for mappings): returns its id.
   */
  fileId(key: string, make: (id: number) => Entry): number {
    const have = this.fileKeys.get(key);
    if (have !== undefined) return have;
    const id = this.nextFileId++;
    this.fileKeys.set(key, id);
    this.files.push(make(id));
    return id;
  }

  /** Failure injection point: tests force a failure (or our own SIGKILL) here. */
  step(name: string): void {
    injectFailure(this.opts.failAt, name, 'step');
  }
}
