// A dump's side of a page server (dump or pre-dump --page-server): the
// connection is made before the tree is frozen (a receiver that is not there
// refuses the dump before anything is touched); each process's pages go over
// it as criu's sender sends them (protocol.ts), the other images are written
// locally. The sender also keeps its own copy of pagemap-PID.img (small: a
// few bytes per run of pages; the same bytes the receiver writes), so the
// next incremental dump made on this one knows what its parent holds.
//
// Integrity: the receiver's files are listed in the sender's digest. The
// sender knows their names (the receiver numbers pages files from 0x10001 in
// the order opened) and their bytes: pages-N.img is the page data sent, in
// order (hashed per chunk as it is sent), pagemap-PID.img the entries sent, encoded as
// its own copy. Copying the receiver's files next to the sender's makes a
// checkpoint that verifies end to end (what reached the receiver's disk is
// what was read from the task); the sender's directory alone is refused at
// restore as incomplete (pages-N.img missing), before anything is created.
//
// Ordering: entries go out in address order (criu's receiver writes them as
// they come; its restore walks them in order). Runs taken from the parent
// are met before the copies gathered ahead of them are read, so they wait in
// a queue and go out just before the first copy above them.
import * as fs from 'node:fs';
import { StasisError, ErrorCodes } from '../errors';
import { abi } from '../sys';
import { tcpConnect, readFull, writeFull, type TcpEndpoint } from '../sys/tcp';
import { PE } from '../images/criu';
import { ChunkedHasher, type DigestEntry } from '../images/digest';
import type { DumpCtx } from '../unit/dump-ctx';
import { PS, PS_FIRST_PAGES_ID, encodeCmd, iov, pidDstId } from './protocol';

const { PAGE_SIZE } = abi;
/** How long a send or an answer may keep us waiting without progress. */
export const TRANSFER_TIMEOUT_MS = 60_000;

function lost(where: string, what: string, e: unknown): StasisError {
  const code = (e as NodeJS.ErrnoException)?.code ?? (e as Error)?.message ?? String(e);
  const why = code === 'EAGAIN' ? `no progress for ${TRANSFER_TIMEOUT_MS / 1000} s` : code;
  return new StasisError(ErrorCodes.IO_ERROR, `page server ${where}: ${what} failed (${why}); nothing was killed`);
}

/** The connection to a page server, one per dump. */
export class PageXfer {
  private opened = 0;
  private closed = false;
  /** `owned`: the connection is ours to end; else the caller's (criu's ps_socket: a migration's stream goes on). */
  private constructor(readonly fd: number, readonly where: string, private readonly owned = true) {}

  /** Over a connection the caller made and keeps. */
  static over(fd: number, where: string): PageXfer { return new PageXfer(fd, where, false); }

  static connect(to: TcpEndpoint): PageXfer {
    const where = `${to.address}:${to.port}`;
    let fd: number;
    try { fd = tcpConnect(to, TRANSFER_TIMEOUT_MS); } catch (e) {
      const errno = (e as { errno?: number }).errno;
      const name = Object.entries(abi.ERRNO).find(([, v]) => v === errno)?.[0] ?? (e as Error).message;
      throw new StasisError(ErrorCodes.IO_ERROR, `cannot connect to page server ${where}: ${name}`);
    }
    return new PageXfer(fd, where);
  }

  send(bufs: Buffer[], what: string): void {
    try { writeFull(this.fd, bufs); } catch (e) { throw lost(this.where, what, e); }
  }

  recv(len: number, what: string): Buffer {
    const b = Buffer.alloc(len);
    let n: number;
    try { n = readFull(this.fd, b, 0, len); } catch (e) { throw lost(this.where, what, e); }
    if (n !== len) throw new StasisError(ErrorCodes.IO_ERROR, `page server ${this.where}: connection closed while waiting for ${what}; nothing was killed`);
    return b;
  }

  /** Open the pagemap of process `vpid` at the receiver: the pages file it writes and whether it has a parent for it. */
  open(vpid: number): RemotePages {
    const dstId = pidDstId(vpid);
    this.send([iov(PS.IOV_OPEN2, { dst_id: dstId })], `opening the pagemap of ${vpid}`);
    const hasParent = this.recv(1, 'the answer to OPEN2')[0] !== 0;
    return new RemotePages(this, dstId, vpid, PS_FIRST_PAGES_ID + this.opened++, hasParent);
  }

  /** All sent: the receiver answers once everything is written (status 0); then the connection is ended. */
  close(): void {
    if (this.closed) return;
    this.send([iov(PS.IOV_CLOSE)], 'closing the transfer');
    const status = this.recv(4, 'the final status').readInt32LE(0);
    this.abort();
    if (status !== 0) throw new StasisError(ErrorCodes.IO_ERROR, `page server ${this.where}: finished with status ${status}; nothing was killed`);
  }

  /** Drop the connection (a receiver that saw no CLOSE keeps nothing). */
  abort(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.owned) try { fs.closeSync(this.fd); } catch { /* gone anyway */ }
  }
}

/** One process's pages going to the receiver. */
export class RemotePages {
  private readonly parents: { vaddr: bigint; n: number }[] = [];
  private pi = 0;
  private bufs: Buffer[] = [];
  private readonly hash = new ChunkedHasher();

  constructor(private readonly x: PageXfer, private readonly dstId: bigint, private readonly vpid: number, readonly pagesId: number, readonly hasParent: boolean) {}

  get pagesFile(): string { return `pages-${this.pagesId}.img`; }

  /** A run taken from the parent (queued: see the top of this file). */
  parent(vaddr: bigint, n: number): void {
    if (!this.hasParent) {
      throw new StasisError(ErrorCodes.USAGE, `page server ${this.x.where} has no parent images for process ${this.vpid}, which this incremental dump refers to (start it with --prev-images-dir, as the dump)`);
    }
    this.parents.push({ vaddr, n });
  }

  private parentsBelow(limit: bigint | undefined): void {
    for (; this.pi < this.parents.length && (limit === undefined || this.parents[this.pi].vaddr < limit); this.pi++) {
      const p = this.parents[this.pi];
      this.bufs.push(iov(encodeCmd(PS.IOV_ADD_F, PE.PARENT), { nr_pages: p.n, vaddr: p.vaddr, dst_id: this.dstId }));
    }
  }

  /** `n` pages at `vaddr`, their data in `data` from `off` (used until send()). */
  present(vaddr: bigint, n: number, data: Buffer, off: number): void {
    this.parentsBelow(vaddr);
    const slice = data.subarray(off, off + n * PAGE_SIZE);
    this.bufs.push(iov(encodeCmd(PS.IOV_ADD_F, PE.PRESENT), { nr_pages: n, vaddr, dst_id: this.dstId }), slice);
    this.hash.update(slice);
  }

  /** Send what is gathered (before the data buffer is reused). */
  send(): void {
    if (!this.bufs.length) return;
    const bufs = this.bufs;
    this.bufs = [];
    this.x.send(bufs, `sending the pages of ${this.vpid}`);
  }

  /** Everything of this process sent: the pages file's digest entry (size, per-chunk SHA-256s), as the receiver will have it. */
  finish(): DigestEntry {
    this.parentsBelow(undefined);
    this.send();
    return this.hash.finish(this.pagesFile);
  }
}

/** Connect to the page server the dump is asked to use (before the freeze). */
export function connectPageServer(ctx: DumpCtx): void {
  const ps = ctx.opts.pageServer;
  if (!ps || ctx.pageXfer) return;
  ctx.pageXfer = 'fd' in ps ? PageXfer.over(ps.fd, ps.where) : PageXfer.connect(ps);
}

/** Every page sent: the receiver confirms it has written them (before the local commit, and before any kill). */
export function finishPageServer(ctx: DumpCtx): void {
  ctx.pageXfer?.close();
}

/** A failed dump: drop the connection (the receiver keeps nothing). */
export function dropPageServer(ctx: DumpCtx): void {
  ctx.pageXfer?.abort();
}
