// Post-copy, the restorer's side (`restore --lazy-pages --page-server
// --address A --port N`): the pages a dump --lazy-pages left out (pagemap
// entries PE_LAZY without PE_PRESENT) are asked of the source's server
// (lazy-source.ts) with criu's GET, one request at a time: a fault's cluster
// at once, the background stream in large chunks. The server may answer
// fewer pages than asked (up to the end of its run): we ask again for the
// rest. When every page is in (or the tree has exited), CLOSE tells the
// source it may kill its tree.
//
// The connection is made before the restore creates anything (nobody
// listening: refused, nothing made). Any failure to get pages is an error of
// the lazy server, which then kills the restored tree before it could read a
// page that never came (restore/lazy-server.ts).
import * as fs from 'node:fs';
import { StasisError, ErrorCodes } from '../errors';
import { abi } from '../sys';
import { tcpConnect, readFull, writeFull, type TcpEndpoint } from '../sys/tcp';
import { PE } from '../images/criu';
import { TRANSFER_TIMEOUT_MS } from './client';
import { PS, PS_IOV, PS_IOV_SIZE, decodeCmd, iov, pidDstId } from './protocol';

const { PAGE_SIZE } = abi;

export class LazyRemote {
  private fd: number;
  readonly where: string;
  /** Requests made and pages received (for the report). */
  requests = 0;
  pages = 0;

  private constructor(fd: number, where: string) { this.fd = fd; this.where = where; }

  static connect(to: TcpEndpoint): LazyRemote {
    const where = `${to.address}:${to.port}`;
    try { return new LazyRemote(tcpConnect(to, TRANSFER_TIMEOUT_MS), where); } catch (e) {
      const errno = (e as { errno?: number }).errno;
      const name = Object.entries(abi.ERRNO).find(([, v]) => v === errno)?.[0] ?? (e as Error).message;
      throw new StasisError(ErrorCodes.IO_ERROR, `cannot connect to the lazy pages server ${where}: ${name}; nothing was restored`);
    }
  }

  /** The connection's fd (-1 once closed), for a handover to another server (restore/lazy-handover.ts). */
  get socket(): number { return this.fd; }

  /** A connection another process made, passed to us (its fd ours now). */
  static adopt(fd: number, where: string): LazyRemote { return new LazyRemote(fd, where); }

  private lost(what: string, e?: unknown): StasisError {
    const why = e ? ` (${(e as NodeJS.ErrnoException).code === 'EAGAIN' ? `no answer for ${TRANSFER_TIMEOUT_MS / 1000} s` : (e as NodeJS.ErrnoException).code ?? (e as Error).message})` : '';
    return new StasisError(ErrorCodes.IO_ERROR, `lazy pages server ${this.where}: ${what}${why}`);
  }

  private recv(buf: Buffer, off: number, len: number, what: string): void {
    let n: number;
    try { n = readFull(this.fd, buf, off, len); } catch (e) { throw this.lost(`connection lost while waiting for ${what}`, e); }
    if (n !== len) throw this.lost(`the source closed the connection while we waited for ${what}`);
  }

  /** `len` bytes of process `vpid`'s memory at `vaddr` (as dumped), into `buf` at `off`. */
  read(vpid: number, vaddr: bigint, buf: Buffer, off: number, len: number): void {
    if (this.fd < 0) throw this.lost('already closed');
    const dst = pidDstId(vpid);
    const hdr = Buffer.alloc(PS_IOV_SIZE);
    for (let done = 0; done < len;) {
      const at = vaddr + BigInt(done);
      const want = (len - done) / PAGE_SIZE;
      try { writeFull(this.fd, [iov(PS.IOV_GET, { nr_pages: want, vaddr: at, dst_id: dst })]); } catch (e) { throw this.lost('asking for pages failed', e); }
      this.recv(hdr, 0, PS_IOV_SIZE, `pages at ${at.toString(16)}`);
      const pi = PS_IOV.decode(hdr);
      const { cmd, flags } = decodeCmd(pi.cmd);
      if (cmd !== PS.IOV_ADD_F || flags !== PE.PRESENT || pi.vaddr !== at || pi.dst_id !== dst || pi.nr_pages === 0n || pi.nr_pages > BigInt(want)) {
        throw this.lost(`bad answer to a request for ${want} pages at ${at.toString(16)} of ${vpid} (command ${cmd}, flags ${flags}, ${pi.nr_pages} pages at ${pi.vaddr.toString(16)})`);
      }
      const k = Number(pi.nr_pages) * PAGE_SIZE;
      this.recv(buf, off + done, k, `pages at ${at.toString(16)}`);
      done += k;
      this.requests++;
      this.pages += k / PAGE_SIZE;
    }
  }

  /** Every page is in: the source may kill its tree (it answers 0). A failure here loses nothing of ours: reported, not thrown. */
  finish(): string | undefined {
    if (this.fd < 0) return undefined;
    let problem: string | undefined;
    try {
      writeFull(this.fd, [iov(PS.IOV_CLOSE)]);
      const st = Buffer.alloc(4);
      this.recv(st, 0, 4, 'the answer to CLOSE');
      if (st.readInt32LE(0) !== 0) problem = `the source answered CLOSE with status ${st.readInt32LE(0)}`;
    } catch (e) {
      problem = (e as Error).message;
    }
    this.drop();
    return problem;
  }

  /** Drop the connection without CLOSE (the source then lets its tree go). */
  drop(): void {
    if (this.fd < 0) return;
    try { fs.closeSync(this.fd); } catch { /* gone anyway */ }
    this.fd = -1;
  }
}

