// Lazy restore (--lazy-pages), the serving side. The tree runs; its private
// anonymous pages are copied in by UFFDIO_COPY: at once for a page a thread
// faults on (a small cluster from there), and all the others streamed in
// large chunks meanwhile. One loop serves every process (poll on all the
// userfaultfds, non-blocking reads); it ends when every page is in, then
// unregisters and closes each userfaultfd (a page never dumped then reads
// zero through the kernel's own fault path, as it would have anyway).
//
// The task's own changes to lazy memory come as events, read before any copy
// can go on (the kernel fails UFFDIO_COPY with EAGAIN while one is pending):
// MADV_DONTNEED (REMOVE) and munmap (UNMAP) take the range off the list,
// mremap (REMAP) moves it, fork (FORK) gives a new userfaultfd for the
// child, served from what its parent still lacked.
//
// If the server fails, the tree must not run on with holes. A userfaultfd
// whose last reference goes (our close, or our death) is unregistered by the
// kernel and its waiting faults resolve as zero pages: silent corruption. So:
// - an error here (image read, unexpected ioctl failure): SIGKILL every
//   process of the job, by pid, before our fds are closed;
// - our own death (SIGKILL included): each lazy process's leader stays
//   traced by us with PTRACE_O_EXITKILL from the restore on (never detached
//   until its pages are in), so the kernel kills it when we exit. Its signals
//   and job-control stops are passed on (CONT with the signal, LISTEN for a
//   group stop). The kernel closes our files before it sends the EXITKILL
//   kills (do_exit: exit_files, then exit_notify), so a thread woken by that
//   release may in principle run a few instructions on a zero page before
//   its SIGKILL arrives; a dup of the userfaultfd left in the task would
//   close that window (faults would hang until the kill) but is an fd the
//   program would see and that nobody could close after us without ptrace:
//   not done.
// - children forked during the lazy period are served (FORK events) but not
//   traced: their pid is unknown to us, so a server death leaves them with
//   zero pages where the image had data. Documented limit.
import * as fs from 'node:fs';
import { abi, sysTry, addressOf, tryWait4, tryKill, isGroupStop, decodeStatus, type WaitStatus, uffdCopy, uffdZeropage, uffdWake, uffdUnregister } from '../sys';
import { StasisError, ErrorCodes, SyscallError } from '../errors';
import type { LazyJob, LazyProc, Seg } from '../resources/memory/lazy';
import type { PageReader } from './page-source';
import { log } from '../log';

const { ERRNO, PAGE_SIZE, POLL, POLLFD, UFFD_MSG, UFFD_EVENT, PTRACE, PTRACE_O, SIG, WAIT, P_PID, SIGINFO_CHLD, SIGINFO_SIZE, CLD } = abi;
const PAGE = BigInt(PAGE_SIZE);
/**
 * Background copies: big chunks (one read, one ioctl), not so big that a
 * fault arriving meanwhile waits long (it is served between two).
 */
const CHUNK = 1 << 20;
/** On a fault: the page and up to this many bytes after it, within its run. */
const FAULT_CLUSTER = 16 * PAGE_SIZE;
const MSGS = 64;
/** Without streaming (held), how long a poll waits before looking at the tracees again. */
const IDLE_MS = 20;
/**
 * Without streaming while a handover is awaited: the same, shorter. A signal
 * to a leader we trace waits in its signal-delivery stop until we pass it
 * on, and the tree has just started (the probe of a service, say).
 */
const SIDE_MS = 2;
/** What one idle step checks ahead (the digest's chunk: digest.ts CHUNK_SIZE). */
const VERIFY_AHEAD = 4 << 20;

type Range = { start: bigint; end: bigint; off: number; fd: number };

/** Remove [a, b) from sorted, disjoint ranges; the pieces removed go to `cut` (if given). */
export function cutRanges<T extends Range>(xs: T[], a: bigint, b: bigint, cut?: T[]): void {
  // The first range ending after a.
  let lo = 0, hi = xs.length;
  while (lo < hi) { const mid = (lo + hi) >> 1; if (xs[mid].end <= a) lo = mid + 1; else hi = mid; }
  let i = lo;
  while (i < xs.length && xs[i].start < b) {
    const x = xs[i];
    const s = x.start > a ? x.start : a;
    const e = x.end < b ? x.end : b;
    cut?.push({ ...x, start: s, end: e, off: x.off + Number(s - x.start) });
    const left = x.start < a ? { ...x, end: a } : undefined;
    const right = x.end > b ? { ...x, start: b, off: x.off + Number(b - x.start) } : undefined;
    const repl = [left, right].filter((r): r is T => r !== undefined);
    xs.splice(i, 1, ...repl);
    i += repl.length;
  }
}

/** Insert ranges (disjoint from those there) keeping the order. */
function insertRanges<T extends Range>(xs: T[], add: T[]): void {
  for (const r of add) {
    let lo = 0, hi = xs.length;
    while (lo < hi) { const mid = (lo + hi) >> 1; if (xs[mid].start < r.start) lo = mid + 1; else hi = mid; }
    xs.splice(lo, 0, r);
  }
}

const siginfo = Buffer.alloc(SIGINFO_SIZE);
/** Has `pid` (our child) exited? Asked without reaping it (waitid WNOWAIT; wait4 has no such flag). */
function exitedUnreaped(pid: number): boolean {
  siginfo.fill(0);
  const r = sysTry('waitid', P_PID, pid, addressOf(siginfo), WAIT.WEXITED | WAIT.WNOHANG | WAIT.WNOWAIT | WAIT.__WALL, 0);
  // si_pid stays 0 when nothing is to report; a tracer is told of stops even without WUNTRACED (CLD_TRAPPED).
  const si = SIGINFO_CHLD.decode(siginfo);
  return r === 0 && si.pid === pid && (si.code === CLD.EXITED || si.code === CLD.KILLED || si.code === CLD.DUMPED);
}

/**
 * What stopped our own child, taken without ever reaping it: its exit is
 * left to its wait (restore without -d), or to whoever adopts it. A stop is
 * taken with waitid(WSTOPPED), which never reports exits.
 */
function ownChildEvent(pid: number): WaitStatus | number {
  if (exitedUnreaped(pid)) return { kind: 'exited', pid, code: -1 };
  siginfo.fill(0);
  const r = sysTry('waitid', P_PID, pid, addressOf(siginfo), WAIT.WUNTRACED | WAIT.WNOHANG | WAIT.__WALL, 0);
  if (r < 0) return r;
  const si = SIGINFO_CHLD.decode(siginfo);
  if (si.pid !== pid) return { kind: 'none' };
  // si_status of a stop is wait4's status >> 8 (the signal, and a ptrace event above it).
  return decodeStatus(pid, ((si.status & 0xffff) << 8) | 0x7f);
}

interface Served { proc: LazyProc; regs: Range[]; gone: boolean }

/** A range as handed over: hex addresses, fd as an index into the fds passed along. */
export interface HandoverRange { start: string; end: string; off: number; fd: number; vpid?: number }
export interface HandoverState {
  procs: { pid: number; uffd: number; gone: boolean; regs: HandoverRange[]; segs: HandoverRange[] }[];
  files: number[];
  traced: number[];
  pids: number[];
  stats: LazyStats;
}

export interface LazyStats { processes: number; pages: number; faultPages: number; streamedPages: number; forks: number }

export class LazyServer {
  private readonly served: Served[];
  /** Leaders we trace (EXITKILL), by our pid. */
  private readonly traced = new Set<number>();
  /** Every process to kill if we fail (the job's; forked children are unknown). */
  private readonly pids: number[];
  readonly stats: LazyStats;
  private readonly faults: { s: Served; addr: bigint }[] = [];
  private readonly buf = Buffer.allocUnsafe(CHUNK);
  private readonly msgs = Buffer.alloc(MSGS * UFFD_MSG.size);
  private next = 0;

  /** `child`: the one process that is our own child (the root, CLONE_PARENT): its exit is left for its wait. */
  constructor(private readonly job: LazyJob, private readonly child = 0) {
    this.served = job.procs.map((proc) => ({ proc, regs: proc.ranges.map(([start, end]) => ({ start, end, off: 0, fd: -1 })), gone: false }));
    this.pids = job.procs.map((p) => p.pid);
    for (const pid of this.pids) this.traced.add(pid);
    const pages = job.procs.reduce((n, p) => n + p.segs.reduce((k, s) => k + Number((s.end - s.start) / PAGE), 0), 0);
    this.stats = { processes: job.procs.length, pages, faultPages: 0, streamedPages: 0, forks: 0 };
  }

  /** Processes whose leader must stay traced (EXITKILL) until the server is done. */
  get tracedPids(): number[] { return this.pids; }

  toJSON(): LazyStats & { bytes: number; server: number } { return { ...this.stats, bytes: this.stats.pages * PAGE_SIZE, server: process.pid }; }

  /**
   * Serve until every page is in. `hold`: a path; streaming waits until it
   * exists (faults are served meanwhile) — a test hook, to look at the tree
   * while pages are certainly missing. `side`: an fd polled alongside (the
   * other end of a handover: lazy-handover.ts, fd < 0: none now); when it
   * is readable, with every fault read so far served, `ready()` is called:
   * true stops serving ('handover'). `faultsOnly`: no streaming while the
   * side is polled (the restore command waiting for its heir leaves the
   * cores to the tree and the heir's start).
   */
  serve(hold?: string, side?: { fd: number; ready(): boolean; faultsOnly?: boolean }): LazyStats | 'handover' {
    try {
      for (;;) {
        const active = this.served.filter((s) => !s.gone && s.proc.segs.length > 0);
        if (!active.length) break;
        const polled = side && side.fd >= 0 ? side.fd : undefined;
        const streaming = (hold === undefined || fs.existsSync(hold)) && !(polled !== undefined && side!.faultsOnly);
        const { sideReady, events } = this.poll(active, streaming ? 0 : polled !== undefined ? SIDE_MS : IDLE_MS, polled);
        this.serveFaults();
        this.watchTracees();
        // Waiting for the heir, nothing to serve: check the pages' next chunk, so that a fault there costs no hashing.
        if (!streaming && polled !== undefined && !events && !sideReady) this.verifyAhead(active);
        if (sideReady && side!.ready()) return 'handover';
        if (streaming) this.streamOne(active);
      }
    } catch (e) {
      // Never leave the tree to run on holes: killed before our fds go. Not waited for:
      // our exit hands the dead tracees to their parents as the kernel does (exit_ptrace).
      for (const pid of this.pids) tryKill(pid, SIG.SIGKILL);
      this.abandon();
      throw e;
    }
    this.close();
    // Post-copy: only now may the source kill its tree (nothing more is needed of it).
    const problem = this.job.reader.finish();
    if (problem) log.warn(`lazy pages: every page is in, but telling the source failed: ${problem}`);
    log.info(`lazy pages: ${this.stats.faultPages} copied on faults, ${this.stats.streamedPages} streamed, ${this.stats.forks} fork(s) followed`);
    return this.stats;
  }

  /** Wait up to `ms` for faults and events (read at once); `sideReady` if `extra` is readable (or hung up). */
  private poll(active: Served[], ms: number, extra?: number): { sideReady: boolean; events: number } {
    const n0 = active.length + (extra === undefined ? 0 : 1);
    const pfds = Buffer.alloc(n0 * POLLFD.size);
    active.forEach((s, i) => POLLFD.encode({ fd: s.proc.uffd, events: POLL.IN }, pfds.subarray(i * POLLFD.size)));
    if (extra !== undefined) POLLFD.encode({ fd: extra, events: POLL.IN }, pfds.subarray(active.length * POLLFD.size));
    const n = sysTry('poll', addressOf(pfds), n0, ms);
    if (n === -ERRNO.EINTR || n === 0) return { sideReady: false, events: 0 };
    if (n < 0) throw new SyscallError('poll', -n, 'userfaultfds');
    active.forEach((s, i) => { if (POLLFD.decode(pfds.subarray(i * POLLFD.size)).revents) this.drain(s); });
    return { sideReady: extra !== undefined && POLLFD.decode(pfds.subarray(active.length * POLLFD.size)).revents !== 0, events: n };
  }

  /** Where verifyAhead goes on: process, run, offset in it (a hint: the lists change under it). */
  private readonly ahead = { proc: 0, seg: 0, at: 0n };

  /** Check the next digest chunk of the pages still to copy (a chunk once checked is not hashed again). */
  private verifyAhead(active: Served[]): void {
    const a = this.ahead;
    for (let tries = 0; tries < active.length; tries++) {
      const segs = active[a.proc % active.length].proc.segs;
      while (a.seg < segs.length && (segs[a.seg].fd < 0 || a.at >= segs[a.seg].end)) { a.seg++; a.at = 0n; }
      if (a.seg < segs.length) {
        const seg = segs[a.seg];
        const at = a.at > seg.start ? a.at : seg.start;
        const len = Math.min(VERIFY_AHEAD, Number(seg.end - at));
        // A chunk that does not match is refused when it is read (its pages never reach the task): not now.
        try { this.job.reader.verify?.(seg, at, len); } catch { a.seg++; a.at = 0n; return; }
        a.at = at + BigInt(len);
        return;
      }
      a.proc++; a.seg = 0; a.at = 0n;
    }
  }

  /** Read every message pending on a userfaultfd: events applied now, faults queued. */
  private drain(s: Served): void {
    for (;;) {
      const n = sysTry('read', s.proc.uffd, addressOf(this.msgs), this.msgs.length);
      if (n === -ERRNO.EAGAIN) return;
      if (n === -ERRNO.EINTR) continue;
      if (n < 0) throw new SyscallError('read', -n, `userfaultfd of ${s.proc.pid || 'a forked child'}`);
      for (let o = 0; o + UFFD_MSG.size <= n; o += UFFD_MSG.size) this.message(s, UFFD_MSG.decode(this.msgs.subarray(o, o + UFFD_MSG.size)));
      if (n < this.msgs.length) return;
    }
  }

  private message(s: Served, m: ReturnType<typeof UFFD_MSG.decode>): void {
    const segs = s.proc.segs as Range[];
    switch (m.event) {
      case UFFD_EVENT.PAGEFAULT: this.faults.push({ s, addr: m.a1 & ~(PAGE - 1n) }); break;
      case UFFD_EVENT.REMOVE: cutRanges(segs, m.a0, m.a1); break; // dropped by the task: zero from now on
      case UFFD_EVENT.UNMAP: cutRanges(segs, m.a0, m.a1); cutRanges(s.regs, m.a0, m.a1); break;
      case UFFD_EVENT.REMAP: {
        const [from, to, len] = [m.a0, m.a1, m.a2];
        for (const xs of [segs, s.regs]) {
          const moved: Range[] = [];
          cutRanges(xs, from, from + len, moved);
          cutRanges(xs, to, to + len);
          insertRanges(xs, moved.map((r) => ({ ...r, start: r.start - from + to, end: r.end - from + to })));
        }
        break;
      }
      case UFFD_EVENT.FORK: {
        // The child lacks what its parent lacked at the fork (copies were held off meanwhile: EAGAIN).
        const child: LazyProc = { pid: 0, uffd: Number(m.a0 & 0xffffffffn), ranges: s.regs.map((r) => [r.start, r.end]), segs: s.proc.segs.map((x) => ({ ...x })) };
        this.served.push({ proc: child, regs: s.regs.map((r) => ({ ...r })), gone: false });
        this.stats.forks++;
        break;
      }
      default: throw new StasisError(ErrorCodes.INTERNAL, `userfaultfd: unexpected event 0x${m.event.toString(16)}`);
    }
  }

  private serveFaults(): void {
    while (this.faults.length) {
      const { s, addr } = this.faults.shift()!;
      if (!s.gone) this.fault(s, addr);
    }
  }

  private fault(s: Served, page: bigint): void {
    for (;;) {
      const segs = s.proc.segs;
      let lo = 0, hi = segs.length;
      while (lo < hi) { const mid = (lo + hi) >> 1; if (segs[mid].end <= page) lo = mid + 1; else hi = mid; }
      const seg = lo < segs.length && segs[lo].start <= page ? segs[lo] : undefined;
      let r: 'done' | 'again';
      if (seg) {
        const len = Math.min(FAULT_CLUSTER, Number(seg.end - page));
        r = this.copy(s, seg, page, len);
        if (r === 'done') this.stats.faultPages += len / PAGE_SIZE;
      } else {
        // Never dumped (or dropped since): a zero page.
        const z = uffdZeropage(s.proc.uffd, page, PAGE_SIZE);
        r = z === -ERRNO.EAGAIN ? 'again' : 'done';
        if (z === -ERRNO.EEXIST) uffdWake(s.proc.uffd, page, PAGE);
        else if (z === -ERRNO.ESRCH) s.gone = true;
        else if (z < 0 && z !== -ERRNO.EAGAIN && z !== -ERRNO.ENOENT) throw new SyscallError('ioctl', -z, `UFFDIO_ZEROPAGE at ${page.toString(16)}`);
      }
      if (r === 'done') return;
      this.drain(s); // an event is pending: it may change what is where
    }
  }

  /**
   * Copy [start, start+len) of `seg` in, exactly: the kernel stops at a page
   * already there (EEXIST: filled by a fault's copy, skipped) and reports how
   * far it got. 'again': an event must be read first (what was copied so far
   * is off the list).
   */
  private copy(s: Served, seg: Seg, start: bigint, len: number, streaming = false): 'done' | 'again' {
    this.job.reader.read(seg, start, this.buf, len, streaming);
    const segs = s.proc.segs as Range[];
    let done = 0;
    while (done < len) {
      const at = start + BigInt(done);
      const r = uffdCopy(s.proc.uffd, at, addressOf(this.buf) + BigInt(done), len - done);
      if (r > 0) { done += r; continue; }
      if (r === -ERRNO.EEXIST) { uffdWake(s.proc.uffd, at, PAGE); done += PAGE_SIZE; continue; }
      if (r === -ERRNO.EAGAIN) { cutRanges(segs, start, at); return 'again'; }
      if (r === -ERRNO.ESRCH) { s.gone = true; return 'done'; } // its mm is gone (exit, exec)
      // Not mapped or not registered any more (an unmap whose event we read): nothing to fill.
      if (r === -ERRNO.ENOENT) break;
      throw new SyscallError('ioctl', -r, `UFFDIO_COPY of ${len - done} bytes at ${at.toString(16)} in ${s.proc.pid || 'a forked child'}`);
    }
    cutRanges(segs, start, start + BigInt(len));
    return 'done';
  }

  private streamOne(active: Served[]): void {
    const s = active[this.next++ % active.length];
    if (s.gone || !s.proc.segs.length) return;
    const seg = s.proc.segs[0];
    const len = Math.min(CHUNK, Number(seg.end - seg.start));
    if (this.copy(s, seg, seg.start, len, true) === 'again') this.drain(s);
    else this.stats.streamedPages += len / PAGE_SIZE;
  }

  /** Pass on what stops our tracees (signals, job control); note who exited. */
  private watchTracees(): void {
    for (const pid of [...this.traced]) {
      for (;;) {
        const ws = pid === this.child ? ownChildEvent(pid) : tryWait4(pid, WAIT.WNOHANG);
        if (typeof ws === 'number') { this.traced.delete(pid); break; }
        if (ws.kind === 'none' || ws.kind === 'continued') break;
        if (ws.kind === 'exited' || ws.kind === 'signaled') {
          this.traced.delete(pid);
          break;
        }
        if (ws.kind === 'stopped') sysTry('ptrace', PTRACE.CONT, pid, 0, ws.signal);
        else if (isGroupStop(ws)) sysTry('ptrace', PTRACE.LISTEN, pid, 0, 0);
        else sysTry('ptrace', PTRACE.CONT, pid, 0, 0);
      }
    }
  }

  /**
   * What another server needs to go on where we stop (lazy-handover.ts): every
   * process's ranges and pages still to copy, the fds in `fds` order (each
   * named by its index there), the leaders traced, the counts so far.
   */
  handoverState(): { state: HandoverState; fds: number[] } {
    const fds: number[] = [];
    const idx = (fd: number) => { const i = fds.indexOf(fd); return i >= 0 ? i : fds.push(fd) - 1; };
    const range = (r: Range | Seg) => ({ start: r.start.toString(16), end: r.end.toString(16), off: r.off, fd: r.fd < 0 ? -1 : idx(r.fd), ...('vpid' in r && r.vpid !== undefined ? { vpid: r.vpid } : {}) });
    const files = this.job.files.map((fd) => idx(fd));
    const procs = this.served.map((s) => ({ pid: s.proc.pid, uffd: idx(s.proc.uffd), gone: s.gone, regs: s.regs.map(range), segs: s.proc.segs.map(range) }));
    return { state: { procs, files, traced: [...this.traced], pids: this.pids, stats: this.stats }, fds };
  }

  /** Where the pages come from (the pages files and their images, the source's server), for a handover. */
  get sources(): Pick<LazyJob, 'pagesFiles' | 'remote'> { return this.job; }

  /** A server going on from another's handoverState, with our copies of its fds. */
  static adopt(st: HandoverState, fds: number[], reader: PageReader): LazyServer {
    const big = (x: string) => BigInt(`0x${x}`);
    const seg = (r: HandoverRange): Seg => ({ start: big(r.start), end: big(r.end), off: r.off, fd: r.fd < 0 ? -1 : fds[r.fd], ...(r.vpid !== undefined ? { vpid: r.vpid } : {}) });
    const procs: LazyProc[] = st.procs.map((p) => ({ pid: p.pid, uffd: fds[p.uffd], ranges: p.regs.map((r) => [big(r.start), big(r.end)]), segs: p.segs.map(seg) }));
    const server = new LazyServer({ procs, files: st.files.map((i) => fds[i]), reader, pagesFiles: [] });
    server.served.forEach((s, i) => { s.gone = st.procs[i].gone; s.regs = st.procs[i].regs.map(seg); });
    server.pids.splice(0, server.pids.length, ...st.pids);
    server.traced.clear();
    Object.assign(server.stats, st.stats);
    return server;
  }

  /** Take over the tracing (EXITKILL) of the leaders another server let go; one gone meanwhile is skipped. */
  seize(pids: number[]): void {
    for (const pid of pids) {
      const r = sysTry('ptrace', PTRACE.SEIZE, pid, 0, PTRACE_O.EXITKILL);
      if (r === 0) this.traced.add(pid);
      else if (r !== -ERRNO.ESRCH) throw new SyscallError('ptrace', -r, `PTRACE_SEIZE of ${pid}`);
    }
  }

  /**
   * Handing over: the leaders let go (the heir seizes them). Our copies of
   * the fds stay open until the heir says it has seized them (then
   * abandon(): closed, not unregistered — the heir's copies keep the
   * userfaultfds, the pages files and the source's connection alive).
   * Returns the pids let go.
   */
  letGo(): number[] {
    const pids = [...this.traced];
    for (const pid of pids) this.detach(pid);
    this.traced.clear();
    return pids;
  }

  /** The restore failed after arming (its tasks are killed): our fds go, nothing else. */
  abandon(): void {
    this.job.reader.drop();
    for (const s of this.served) fs.closeSync(s.proc.uffd);
    this.served.length = 0;
    for (const fd of this.job.files) fs.closeSync(fd);
    this.job.files.length = 0;
    this.traced.clear();
  }

  /** Unregister and close every userfaultfd (the task's mm then holds no reference to them), let the leaders go. */
  private close(): void {
    for (const s of this.served) {
      for (const r of s.regs) uffdUnregister(s.proc.uffd, r.start, r.end - r.start);
      fs.closeSync(s.proc.uffd);
    }
    this.served.length = 0;
    for (const fd of this.job.files) fs.closeSync(fd);
    this.job.files.length = 0;
    for (const pid of this.traced) this.detach(pid);
    this.traced.clear();
  }

  private detach(pid: number): void {
    if (sysTry('ptrace', PTRACE.INTERRUPT, pid, 0, 0) < 0) return;
    for (;;) {
      // Our own child: polled (its exit is not ours to take), the others waited for.
      const ws = pid === this.child ? ownChildEvent(pid) : tryWait4(pid, 0);
      if (typeof ws === 'number') return;
      if (ws.kind === 'none') continue;
      if (ws.kind === 'exited' || ws.kind === 'signaled') return;
      if (ws.kind === 'stopped') { sysTry('ptrace', PTRACE.DETACH, pid, 0, ws.signal); return; } // a signal: delivered on the way out
      if (ws.kind === 'ptrace-event') { sysTry('ptrace', PTRACE.DETACH, pid, 0, 0); return; } // our interrupt, or a group stop it stays in
    }
  }
}
