// Post-copy, the source's side (`stasis dump --lazy-pages --port N`): the
// dump writes every image but the private anonymous pages (pagemap entries
// flagged PE_LAZY, no data in pages-N.img), then keeps the tree frozen and
// serves those pages to the restorer over TCP, read from the frozen
// processes through /proc/PID/mem, as criu's lazy dump does (cr_lazy_mem_dump
// serves them from its page pipes). The restorer (`restore --lazy-pages
// --page-server`, src/pageserver/lazy-client.ts) asks with criu's commands:
//
//   GET vaddr n dst_id      answered by ADD_F(PE_PRESENT) vaddr k dst_id and
//                           k <= n pages of data (k: up to the end of the
//                           lazy run holding vaddr; the asker asks again)
//   CLOSE                   answered by an int32 0: the restorer has every
//                           page it needs; the source tree is then killed
//
// The port is bound before the freeze (a port in use refuses the dump with
// the tree untouched); the restorer is waited for without a limit (as criu).
// Commands are waited for without a limit too (a restore held or slow to
// fault is not a failure), page data is sent with the transfer timeout.
import * as fs from 'node:fs';
import { StasisError, ErrorCodes } from '../errors';
import { abi } from '../sys';
import { tcpListen, tcpAccept, readFull, writeFull, peerName, setRecvTimeout, type TcpEndpoint } from '../sys/tcp';
import { PE } from '../images/criu';
import { TRANSFER_TIMEOUT_MS } from './client';
import { PS, PS_IOV, PS_IOV_SIZE, PS_TYPE, PS_TYPE_BITS, PS_TYPE_MASK, decodeCmd, encodeCmd, iov } from './protocol';

const { PAGE_SIZE } = abi;
const PAGE = BigInt(PAGE_SIZE);
/** Most pages one answer carries (the asker asks again for the rest). */
const MAX_ANSWER_PAGES = 1024;

interface LazyProcess { pid: number; runs: [bigint, bigint][]; mem: number }

export interface LazyServeStats { peer: string; requests: number; pages: number; lazyPages: number }

export class LazySourceServer {
  private readonly procs = new Map<number, LazyProcess>();
  private lazyPages = 0;

  private constructor(private listenFd: number, readonly port: number, readonly address: string) {}

  /** Bind and listen (before the freeze). */
  static listen(at: TcpEndpoint): LazySourceServer {
    let l: { fd: number; port: number };
    try { l = tcpListen(at); } catch (e) {
      throw new StasisError(ErrorCodes.IO_ERROR, `--lazy-pages: cannot listen on ${at.address}:${at.port}: ${(e as Error).message}; nothing was touched`);
    }
    return new LazySourceServer(l.fd, l.port, at.address);
  }

  /** Process `vpid` (our pid `pid`) has lazy pages [vaddr, vaddr + n pages), in address order. */
  add(vpid: number, pid: number, vaddr: bigint, n: number): void {
    let p = this.procs.get(vpid);
    if (!p) this.procs.set(vpid, (p = { pid, runs: [], mem: -1 }));
    const end = vaddr + BigInt(n) * PAGE;
    const last = p.runs[p.runs.length - 1];
    if (last && last[1] === vaddr) last[1] = end;
    else p.runs.push([vaddr, end]);
    this.lazyPages += n;
  }

  get pages(): number { return this.lazyPages; }

  /**
   * Serve one restorer until it says it has everything (CLOSE). Throws if
   * the connection breaks off before that: the caller then lets the tree go.
   */
  serve(onConnected?: (peer: string) => void): LazyServeStats {
    let sk = -1;
    try {
      sk = tcpAccept(this.listenFd, TRANSFER_TIMEOUT_MS);
      fs.closeSync(this.listenFd);
      this.listenFd = -1;
      setRecvTimeout(sk, 0); // commands: no limit (see the top)
      const peer = peerName(sk);
      onConnected?.(peer);
      for (const p of this.procs.values()) p.mem = fs.openSync(`/proc/${p.pid}/mem`, 'r');
      return this.session(sk, peer);
    } finally {
      if (sk >= 0) fs.closeSync(sk);
      this.close();
    }
  }

  private session(sk: number, peer: string): LazyServeStats {
    const st: LazyServeStats = { peer, requests: 0, pages: 0, lazyPages: this.lazyPages };
    const hdr = Buffer.alloc(PS_IOV_SIZE);
    const data = Buffer.allocUnsafe(MAX_ANSWER_PAGES * PAGE_SIZE);
    const lost = (what: string, e?: unknown) => new StasisError(ErrorCodes.IO_ERROR, `lazy pages: restorer ${peer}: ${what}${e ? ` (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})` : ''}`);
    for (;;) {
      let n: number;
      try { n = readFull(sk, hdr, 0, PS_IOV_SIZE); } catch (e) { throw lost('connection lost', e); }
      if (n !== PS_IOV_SIZE) throw lost('closed the connection before it had every page (no CLOSE)');
      const pi = PS_IOV.decode(hdr);
      const { cmd } = decodeCmd(pi.cmd);
      if (cmd === PS.IOV_CLOSE || cmd === PS.IOV_FORCE_CLOSE) {
        try { writeFull(sk, [Buffer.alloc(4)]); } catch { /* it has everything: its close is what matters */ }
        return st;
      }
      if (cmd !== PS.IOV_GET) throw lost(`unexpected command ${cmd}`);
      if ((pi.dst_id & PS_TYPE_MASK) !== PS_TYPE.PID) throw lost(`asked for pagemap type ${pi.dst_id & PS_TYPE_MASK}`);
      const vpid = Number(pi.dst_id >> PS_TYPE_BITS);
      const k = this.answerable(vpid, pi.vaddr, pi.nr_pages);
      if (k === 0) throw lost(`asked for ${pi.nr_pages} pages at ${pi.vaddr.toString(16)} of process ${vpid}, which are not lazy pages of this dump`);
      const len = k * PAGE_SIZE;
      const p = this.procs.get(vpid)!;
      const got = fs.readSync(p.mem, data, 0, len, Number(pi.vaddr));
      if (got !== len) throw new StasisError(ErrorCodes.IO_ERROR, `lazy pages: short read of ${len} bytes at ${pi.vaddr.toString(16)} in /proc/${p.pid}/mem`);
      const answer = iov(encodeCmd(PS.IOV_ADD_F, PE.PRESENT), { nr_pages: k, vaddr: pi.vaddr, dst_id: pi.dst_id });
      try { writeFull(sk, [answer, data.subarray(0, len)]); } catch (e) { throw lost('sending pages failed', e); }
      st.requests++;
      st.pages += k;
    }
  }

  /** How many of the `n` pages asked for at `vaddr` can be answered: up to the end of the lazy run holding it (0: none). */
  private answerable(vpid: number, vaddr: bigint, n: bigint): number {
    const p = this.procs.get(vpid);
    if (!p || n <= 0n || vaddr % PAGE !== 0n) return 0;
    let lo = 0, hi = p.runs.length;
    while (lo < hi) { const mid = (lo + hi) >> 1; if (p.runs[mid][1] <= vaddr) lo = mid + 1; else hi = mid; }
    if (lo >= p.runs.length || p.runs[lo][0] > vaddr) return 0;
    const inRun = Number((p.runs[lo][1] - vaddr) / PAGE);
    return Math.min(inRun, Number(n > BigInt(MAX_ANSWER_PAGES) ? MAX_ANSWER_PAGES : n));
  }

  /** Nothing more to serve (or a failed dump): the socket and the mem files go. */
  close(): void {
    if (this.listenFd >= 0) { fs.closeSync(this.listenFd); this.listenFd = -1; }
    for (const p of this.procs.values()) if (p.mem >= 0) { fs.closeSync(p.mem); p.mem = -1; }
  }
}

/** dump --lazy-pages: refuse what does not go with it, then listen (before the freeze). */
export function listenLazy(ctx: import('../unit/dump-ctx').DumpCtx): void {
  const o = ctx.opts.lazyPages;
  if (!o || ctx.lazySource) return;
  const clash = ctx.opts.leaveRunning ? '-R' : ctx.opts.preDump ? 'pre-dump' : ctx.opts.pageServer ? '--page-server' : ctx.opts.prevImagesDir ? '--prev-images-dir' : ctx.opts.trackMem ? '--track-mem' : undefined;
  if (clash) throw new StasisError(ErrorCodes.USAGE, `--lazy-pages does not go with ${clash}`);
  ctx.lazySource = LazySourceServer.listen(o);
}
