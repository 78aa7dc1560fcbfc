// Write tracking for pre-dumps and incremental dumps, without soft-dirty
// (this kernel has no CONFIG_MEM_SOFT_DIRTY): a userfaultfd in the task,
// registered in write-protect mode with UFFD_FEATURE_WP_ASYNC over every
// private VMA, its pages write-protected. In async mode a write never waits
// for anyone: the kernel just clears the page's protection, and PAGEMAP_SCAN
// (category PAGE_IS_WRITTEN) tells which pages lost it since.
//
// Where the state lives between the pre-dump and the dump: in the task. The
// write-protect bits are in its page tables and last as long as the
// userfaultfd is registered, that is as long as the userfaultfd is open; so
// the task keeps it, as an fd it does not know about (opened by the task
// itself through a remote syscall, close-on-exec, moved high in the fd table).
// No daemon has to outlive stasis, and a task that exits or execs takes the
// tracking with it. The fd is marked: exactly our userfaultfd features, and
// F_SETSIG set to TRACK_MARK_SIG (never sent: the fd has no O_ASYNC), F_SETOWN
// to the task's own pid (a child that inherits the fd inherits neither the
// registration nor the owner). Every dump recognises these fds, never dumps
// them as files, and closes them in a task that goes on without tracking; a
// userfaultfd of the application's own is left alone (and refused by the dump).
//
// Which pre-dump the bits belong to: each arming (pre-dump, or dump -R
// --track-mem) is a new generation, written into the images' `stasis-track`
// file as the userfaultfd's inode and its fd number in the task. A later
// dump trusts the bits only if the task still holds that very userfaultfd at
// that very fd (same inode, same process start time, owned by the task
// itself): another pre-dump into another directory in between would have
// re-armed it, and the dump then copies everything rather than trust bits
// armed for someone else. A first arming opens a NEW userfaultfd (a new
// inode). An arming made on the generation the task holds re-arms it in
// place (rearm): PAGEMAP_SCAN with PM_SCAN_WP_MATCHING protects again just
// the pages written since (the whole VMA's protection, unregistering and
// registering anew, cost ~50 ms per GiB frozen), VMAs mapped or moved since
// are registered, and the fd moves to the next number up — the new
// generation's mark, never an earlier one's (numbers only grow until the
// limit is near; then a new userfaultfd). VMAs mapped or moved since the
// arming are not registered (no 'uw' in smaps VmFlags): all their pages are
// copied.
// Shared mappings are never trusted: another process may write them.
//
// The kernel reports as written every page it cannot vouch for (a fresh
// page, one zapped and faulted in again), so an unwritten present page holds
// what the parent copied after the arming. Writes through pages pinned before
// the arming (O_DIRECT, io_uring fixed buffers) bypass the page tables and
// are not seen, as with soft-dirty in criu.
import * as fs from 'node:fs';
import { abi, uffdApi, uffdRegisterWp, uffdUnregister, uffdWriteProtect, pagemapScan, pagemapScanRegions, type PageRegion, grabFd } from '../../sys';
import { listFds } from '../../proc/proc';
import { StasisError, ErrorCodes } from '../../errors';
import type { RemoteTask } from '../../compel/remote';
import type { ProcessDump } from '../../unit/dump-ctx';
import type { ClassifiedVma } from './classify';
import { VMA } from '../../images/criu';

const { O, F, UFFD_FEATURE, UFFD_FEATURE_INITIALIZED, UFFD_USER_MODE_ONLY, PM_SCAN, PAGE_IS, ERRNO } = abi;

/** What we ask of the kernel (WP_ASYNC implies WP_UNPOPULATED; asked for explicitly so the fdinfo value is ours). */
export const UFFD_FEATURES = UFFD_FEATURE.WP_ASYNC | UFFD_FEATURE.WP_UNPOPULATED;
const UFFD_LINK = 'anon_inode:[userfaultfd]';
/** The tracking fd goes this far below the task's soft RLIMIT_NOFILE (out of the way of the fds it opens). */
const FD_HEADROOM = 32;
/** F_SETSIG value marking our userfaultfd (a mark, not a signal anyone sends). */
const TRACK_MARK_SIG = abi.SIG.SIGRTMAX;

/** The file naming the armed userfaultfd of each process. */
export const TRACK_FILE = 'stasis-track';
/** Version 2: each line ends with the fd; version 1 (no fd) is still read. */
const TRACK_HEADER = 'stasis-track 2';
const TRACK_HEADER_V1 = 'stasis-track 1';

/** `fd`: the userfaultfd's number in the task (undefined: a version 1 record, made before armings in place). */
export interface TrackRecord { vpid: number; pid: number; start: bigint; ino: number; fd?: number }

export function formatTrack(recs: TrackRecord[]): Buffer {
  const lines = [...recs].sort((a, b) => a.vpid - b.vpid).map((r) => `${r.vpid} ${r.pid} ${r.start} ${r.ino} ${r.fd}`);
  return Buffer.from([TRACK_HEADER, ...lines].join('\n') + '\n', 'latin1');
}

export function parseTrack(where: string, buf: Buffer): Map<number, TrackRecord> {
  const lines = buf.toString('latin1').split('\n');
  const v1 = lines[0] === TRACK_HEADER_V1;
  if (lines.pop() !== '' || (lines[0] !== TRACK_HEADER && !v1)) throw new StasisError(ErrorCodes.BAD_IMAGE, `${where}: not a stasis tracking record`);
  const out = new Map<number, TrackRecord>();
  for (const l of lines.slice(1)) {
    const m = (v1 ? /^(\d+) (\d+) (\d+) (\d+)$/ : /^(\d+) (\d+) (\d+) (\d+) (\d+)$/).exec(l);
    if (!m) throw new StasisError(ErrorCodes.BAD_IMAGE, `${where}: damaged line '${l}'`);
    out.set(Number(m[1]), { vpid: Number(m[1]), pid: Number(m[2]), start: BigInt(m[3]), ino: Number(m[4]), ...(v1 ? {} : { fd: Number(m[5]) }) });
  }
  return out;
}

/** A userfaultfd of ours in a task. */
interface OurUffd { fd: number; ino: number; owner: number }

/**
 * The present or swapped pages of each tracked VMA, by VMA start, as regions
 * with their PAGE_IS_PRESENT/SWAPPED/FILE/WRITTEN categories; a VMA absent
 * here is not tracked.
 */
export type Written = Map<bigint, PageRegion[]>;

export interface ProcTracking {
  /** Written since the parent armed the tracking; undefined: the parent's arming is not there (copy all). */
  written?: Written;
  /** The userfaultfd armed by this dump (its record for TRACK_FILE). */
  armed?: TrackRecord;
  /** The task's fds that are ours (never dumped as files). */
  own: number[];
}

function ourUffds(pid: number): { fd: number; ino: number }[] {
  const out: { fd: number; ino: number }[] = [];
  for (const fd of listFds(pid)) {
    let link: string;
    try { link = fs.readlinkSync(`/proc/${pid}/fd/${fd}`); } catch { continue; }
    if (link !== UFFD_LINK) continue;
    const info = fs.readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8');
    const api = /^API:\s*([0-9a-f]+):([0-9a-f]+):/m.exec(info);
    if (!api || parseInt(api[2], 16) !== ((UFFD_FEATURES | UFFD_FEATURE_INITIALIZED) >>> 0)) continue;
    out.push({ fd, ino: fs.statSync(`/proc/${pid}/fd/${fd}`).ino });
  }
  return out;
}

/** Private VMAs: written only through this mm's page tables. */
export function trackable(cv: ClassifiedVma): boolean {
  // The kernel's writes to an AIO ring leave no written-page trace: always copied whole.
  return (cv.policy === 'anon' || cv.policy === 'cow-copies') && !(cv.status & VMA.AREA_AIORING);
}

/**
 * The pages of each VMA the parent's userfaultfd still write-protects, and
 * which were written. One PAGEMAP_SCAN per VMA tells both (no per-page
 * pagemap walk for these): CHECK_WPASYNC fails with EPERM on a VMA not (or
 * not wholly) registered, which is then copied whole.
 */
function scanWritten(pid: number, vmas: ClassifiedVma[]): Written {
  const written: Written = new Map();
  const pm = fs.openSync(`/proc/${pid}/pagemap`, 'r');
  const cat = { anyOf: PAGE_IS.PRESENT | PAGE_IS.SWAPPED, returned: PAGE_IS.PRESENT | PAGE_IS.SWAPPED | PAGE_IS.FILE | PAGE_IS.WRITTEN };
  try {
    for (const cv of vmas) {
      if (!trackable(cv)) continue;
      try {
        written.set(cv.vma.start, pagemapScanRegions(pm, cv.vma.start, cv.vma.end, PM_SCAN.CHECK_WPASYNC, cat));
      } catch (e) {
        if ((e as { errno?: number }).errno !== ERRNO.EPERM) throw e;
      }
    }
  } finally {
    fs.closeSync(pm);
  }
  return written;
}

/** Open a new userfaultfd in the task, out of the way of its own fds; returns its number there. */
function openInTask(t: RemoteTask, pd: ProcessDump): number {
  const fd = t.callNum('userfaultfd', O.CLOEXEC | O.NONBLOCK | UFFD_USER_MODE_ONLY);
  const limits = fs.readFileSync(`/proc/${pd.pid}/limits`, 'utf8');
  const soft = Number(/^Max open files\s+(\d+)/m.exec(limits)?.[1] ?? 1024);
  const high = Number(t.callRaw('fcntl', fd, F.DUPFD_CLOEXEC, Math.max(fd + 1, soft - FD_HEADROOM)));
  if (high < 0) return fd; // no room up there: it stays where it is
  t.call('close', fd);
  return high;
}

/**
 * A VMA registered for write-protect with `uffd` and all its pages protected.
 * One the kernel will not register (VM_DROPPABLE...) stays untracked: copied
 * whole every time.
 */
function protectWhole(uffd: number, cv: ClassifiedVma): void {
  const len = cv.vma.end - cv.vma.start;
  if (uffdRegisterWp(uffd, cv.vma.start, len) >= 0) uffdWriteProtect(uffd, cv.vma.start, len, true);
}

/**
 * Arm tracking: a new userfaultfd registered for async write-protect over
 * every private VMA, all their pages protected. The task is frozen.
 */
function arm(t: RemoteTask, pd: ProcessDump, vmas: ClassifiedVma[]): TrackRecord {
  const fd = openInTask(t, pd);
  // Marks it as the task's own (a forked child inherits the fd, not the registration).
  t.call('fcntl', fd, F.SETOWN, pd.vpid);
  t.call('fcntl', fd, F.SETSIG, TRACK_MARK_SIG);
  const ours = grabFd(pd.pid, fd);
  try {
    const offered = uffdApi(ours, UFFD_FEATURES);
    if ((Number(offered) & UFFD_FEATURE.WP_ASYNC) === 0) throw new StasisError(ErrorCodes.UNSUPPORTED, 'this kernel has no asynchronous userfaultfd write-protect (UFFD_FEATURE_WP_ASYNC): memory changes cannot be tracked');
    for (const cv of vmas) if (trackable(cv)) protectWhole(ours, cv);
    return { vpid: pd.vpid, pid: pd.pid, start: pd.stat.startTime, ino: fs.fstatSync(ours).ino, fd };
  } finally {
    fs.closeSync(ours);
  }
}

/**
 * Re-arm in place the generation `u` the task holds (the parent's; `written`:
 * what the scan found written since, by registered VMA): the written pages
 * protected again (PM_SCAN_WP_MATCHING), VMAs not registered (mapped or moved
 * since) registered and protected, then the fd moved up one or more numbers
 * (the new generation). Undefined when there is no number left up there: the
 * caller arms a new userfaultfd instead. The task is frozen. Once the new
 * number exists the old one goes even if re-arming fails: bits half re-armed
 * under the parent's generation must never be trusted by a dump made on it.
 */
function rearm(t: RemoteTask, pd: ProcessDump, u: OurUffd, vmas: ClassifiedVma[], written: Written): TrackRecord | undefined {
  const moved = Number(t.callRaw('fcntl', u.fd, F.DUPFD_CLOEXEC, u.fd + 1));
  if (moved < 0) return undefined;
  try {
    const ours = grabFd(pd.pid, u.fd);
    const pm = fs.openSync(`/proc/${pd.pid}/pagemap`, 'r');
    try {
      for (const cv of vmas) {
        if (!trackable(cv)) continue;
        // Only its written pages lost their protection (reported as WRITTEN, present or swapped).
        if (written.has(cv.vma.start)) pagemapScan(pm, cv.vma.start, cv.vma.end, PM_SCAN.WP_MATCHING | PM_SCAN.CHECK_WPASYNC, PAGE_IS.WRITTEN);
        else protectWhole(ours, cv);
      }
    } finally {
      fs.closeSync(pm);
      fs.closeSync(ours);
    }
  } finally {
    t.call('close', u.fd);
  }
  return { vpid: pd.vpid, pid: pd.pid, start: pd.stat.startTime, ino: u.ino, fd: moved };
}

function uwOf(flags: Map<bigint, string[]>): (start: bigint) => boolean {
  return (start) => (flags.get(start) ?? []).includes('uw');
}

/** The task's VMAs and (lazily: smaps is slow on big processes) their smaps VmFlags, read while it is frozen. */
export interface Layout { vmas: ClassifiedVma[]; vmFlags: () => Map<bigint, string[]> }

export interface TrackRequest {
  /** The parent's record of this process, if any. */
  parent?: TrackRecord;
  /** Arm a new tracking (pre-dump; dump -R --track-mem). */
  arm: boolean;
  /** The task goes on after the dump (so fds of ours not re-armed are closed). */
  goesOn: boolean;
}

/**
 * In the parasite session of a frozen process: find our userfaultfds, read
 * what was written since the parent armed tracking (if that arming is still
 * there), then re-arm or close as asked.
 */
export function trackInTask(t: RemoteTask, pd: ProcessDump, layout: () => Layout, req: TrackRequest): ProcTracking {
  const candidates = ourUffds(pd.pid);
  if (!candidates.length && !req.arm) return { own: [] }; // the common case: nothing to read or do
  const { vmas, vmFlags } = layout();
  const found: OurUffd[] = candidates
    .filter((u) => Number(t.callRaw('fcntl', u.fd, F.GETSIG)) === TRACK_MARK_SIG)
    .map((u) => ({ ...u, owner: Number(t.callRaw('fcntl', u.fd, F.GETOWN)) }));
  // The task's own arming: a copy inherited from a parent process names another owner (and another mm).
  const p = req.parent;
  const mine = p && found.find((u) => u.owner === pd.vpid && u.ino === p.ino && (p.fd === undefined || p.fd === u.fd) && p.pid === pd.pid && p.start === pd.stat.startTime);
  const res: ProcTracking = { own: [] };
  if (mine) res.written = scanWritten(pd.pid, vmas);
  if (!req.arm && !req.goesOn) {
    res.own = found.map((u) => u.fd); // the task dies with them: just not dumped
    return res;
  }
  // The generation the task holds, re-armed in place (a version 1 parent's too old to be told apart: new one).
  const inPlace = req.arm && mine && res.written && p?.fd !== undefined ? rearm(t, pd, mine, vmas, res.written) : undefined;
  for (const u of found) {
    if (u === mine && inPlace) continue;
    if (u.owner === pd.vpid && req.arm) {
      // Its registration goes now, for the new one (closing might not release it: a child may hold a copy).
      // Which VMAs it holds: those the scan of its writes could read (when it
      // was read: EPERM is 'not registered'), else smaps' 'uw' (smaps is slow
      // on a big process: ~12 ms per GiB, with the tree frozen).
      const registered = res.written && u === mine ? (start: bigint) => res.written!.has(start) : uwOf(vmFlags());
      const ours = grabFd(pd.pid, u.fd);
      try { for (const cv of vmas) if (registered(cv.vma.start)) uffdUnregister(ours, cv.vma.start, cv.vma.end - cv.vma.start); } finally { fs.closeSync(ours); }
    }
    t.call('close', u.fd);
  }
  if (inPlace) {
    res.armed = inPlace;
    res.own = [inPlace.fd!];
  } else if (req.arm) {
    res.armed = arm(t, pd, vmas);
    // Hidden from this dump's fd table (-R --track-mem: the task keeps it).
    res.own = ourUffds(pd.pid).filter((u) => u.ino === res.armed!.ino).map((u) => u.fd);
  }
  return res;
}
