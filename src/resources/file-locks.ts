// File locks: POSIX record locks, OFD locks, flock() locks and leases, from
// the "lock:" lines of each fd's fdinfo (which lists the locks this process
// holds through that open file description), into file-locks.img (criu's);
// re-taken on restore by the same process on the same fd (so by the same
// open file description) before the process runs. Leases: see leases.ts.
//
// Always, where criu wants --file-locks (and refuses without it): a lock is
// part of the program's state, and taking it again cannot go wrong quietly —
// if another process holds it by then, the restore fails and leaves nothing.
// --file-locks is accepted and changes nothing.
import { abi, kcmp, sys, sysTry, grabFd } from '../sys';
import { inBuf } from '../compel/remote';
import { leaseType, restoreLease, badLeaseType } from './leases';
import { readFdInfo, listFds } from '../proc/proc';
import { parts, type Msg } from '../images/image';
import { FL_KIND } from '../images/criu';
import { StasisError, ErrorCodes } from '../errors';
import { defineUnit } from '../unit/unit';

const { F, FLOCK, LOCK, LOCK_TYPE, SEEK } = abi;
type Lock = Msg<'file_lock_entry'>;

export interface LockLine { kind: string; state: string; type: string; pid: number; dev: string; ino: number; start: bigint; end: bigint | 'EOF' }

/** "lock:\t1: POSIX  ADVISORY  WRITE 1234 08:01:5678 0 EOF" lines of an fdinfo. */
export function parseLockLines(raw: string): LockLine[] {
  const out: LockLine[] = [];
  for (const m of raw.matchAll(/^lock:\s+\d+:\s+(\S+)\s+(\S+)\s+(\S+)\s+(-?\d+)\s+([0-9a-f]+:[0-9a-f]+):(\d+)\s+(\d+)\s+(\d+|EOF)/gm)) {
    out.push({ kind: m[1], state: m[2], type: m[3], pid: Number(m[4]), dev: m[5], ino: Number(m[6]), start: BigInt(m[7]), end: m[8] === 'EOF' ? 'EOF' : BigInt(m[8]) });
  }
  return out;
}

const KINDS: Record<string, number> = { POSIX: FL_KIND.POSIX, FLOCK: FL_KIND.FLOCK, OFDLCK: FL_KIND.OFD, LEASE: FL_KIND.LEASE };

/**
 * The file_lock_entry of a lock line held through fd `fd` of `pid`.
 * `breakingTarget`: for a lease being broken, what F_GETLEASE says it is
 * becoming (the line's type is that too on new kernels, "READ" on old ones).
 */
export function lockEntry(l: LockLine, pid: number, fd: number, breakingTarget?: () => number): Lock {
  const flag = KINDS[l.kind];
  if (flag === undefined) {
    throw new StasisError(ErrorCodes.UNSUPPORTED, `fd ${fd} of pid ${pid} holds a ${l.kind === 'DELEG' ? 'delegation (an NFS server\'s lease)' : `'${l.kind}' lock`} on inode ${l.ino}; not supported`);
  }
  if (flag === FL_KIND.LEASE) return { flag, type: leaseType(l, pid, fd, breakingTarget), pid, fd, start: 0n, len: 0n };
  const type = l.type === 'WRITE' ? LOCK_TYPE.WRLCK : LOCK_TYPE.RDLCK;
  // The kernel prints the last byte of the range; criu's len 0 means "to the end of the file".
  const len = l.end === 'EOF' ? 0n : l.end - l.start + 1n;
  return { flag, type, pid, fd, start: l.start, len };
}

function dumpLocks(pid: number): Lock[] {
  const out: Lock[] = [];
  const seen = new Set<string>();
  for (const fd of listFds(pid)) {
    for (const l of parseLockLines(readFdInfo(pid, fd).raw)) {
      const e = lockEntry(l, pid, fd, () => leaseNow(pid, fd));
      if (e.flag === FL_KIND.POSIX) {
        // A POSIX lock belongs to the process and shows once per fd of its file.
        const key = `${l.dev}:${l.ino}:${e.start}:${e.len}:${e.type}`;
        if (seen.has(key)) continue;
        seen.add(key);
      } else if (out.some((x) => x.flag === e.flag && x.start === e.start && x.len === e.len && x.type === e.type && sharesFile(pid, x.fd, pid, fd))) {
        // flock, OFD locks and leases belong to the open file description: once for all its fds
        // (two descriptions of one file each hold their own).
        continue;
      }
      out.push(e);
    }
  }
  return out;
}

/** F_GETLEASE on the task's open file description (a copy of its fd: the same file). */
function leaseNow(pid: number, fd: number): number {
  const f = grabFd(pid, fd);
  try { return sys('fcntl', f, F.GETLEASE, 0, 0, 0, 0, `fd ${fd} of pid ${pid}`); } finally { sysTry('close', f); }
}

const KIND_NAMES: Record<number, string> = { [FL_KIND.POSIX]: 'POSIX', [FL_KIND.FLOCK]: 'flock', [FL_KIND.OFD]: 'OFD', [FL_KIND.LEASE]: 'lease' };

export const fileLocksUnit = defineUnit({
  name: 'file-locks',
  /** Locks taken, with the pid (ours) of the process holding each. */
  dumpState: () => [] as { lock: Lock; host: number }[],
  dumpPhases: [
    {
      // Read (and leases' states asked) before anything is injected into the task.
      name: 'file-locks', before: ['parasite'],
      each(_ctx, pd, st) {
        const locks = dumpLocks(pd.pid);
        // An open file description shared by processes of the tree: its flock/OFD lock once.
        for (const l of locks) {
          if (l.flag !== FL_KIND.POSIX && st.some((x) => x.lock.flag === l.flag && x.lock.start === l.start && x.lock.len === l.len && sharesFile(x.host, x.lock.fd, pd.pid, l.fd))) continue;
          st.push({ lock: { ...l, pid: pd.vpid }, host: pd.pid });
        }
      },
    },
    { name: 'write-file-locks', after: ['file-locks'], once: (ctx, st) => { if (st.length) ctx.write('file-locks.img', 'FILE_LOCKS', parts('file_lock_entry', st.map((x) => x.lock))); } },
  ],
  load(ld) {
    if (!ld.images.exists('file-locks.img')) return [];
    const locks = ld.images.read('file-locks.img', 'FILE_LOCKS', 'file_lock_entry');
    const pids = new Set(ld.processes.map((p) => p.pid));
    for (const l of locks) {
      if (!pids.has(l.pid)) throw new StasisError(ErrorCodes.BAD_IMAGE, `${ld.images.path('file-locks.img')}: lock of pid ${l.pid}, not in the tree`);
      if (!KIND_NAMES[l.flag]) throw new StasisError(ErrorCodes.BAD_IMAGE, `${ld.images.path('file-locks.img')}: unsupported lock kind ${l.flag}`);
      const bad = l.flag === FL_KIND.LEASE ? badLeaseType(l.type) : undefined;
      if (bad) throw new StasisError(ErrorCodes.BAD_IMAGE, `${ld.images.path('file-locks.img')}: fd ${l.fd} of pid ${l.pid}: ${bad}`);
    }
    return locks;
  },
  restorePhases: [{
    // On the final fds (the same open file descriptions), before the task runs.
    name: 'file-locks', after: ['files'], before: ['files-cleanup'],
    each(_ctx, tr, locks) {
      for (const l of locks.filter((x) => x.pid === tr.img.pid)) {
        if (l.flag === FL_KIND.LEASE) { restoreLease(tr, l); continue; }
        let r: bigint;
        if (l.flag === FL_KIND.FLOCK) {
          r = tr.task.callRaw('flock', l.fd, (l.type === LOCK_TYPE.WRLCK ? LOCK.EX : LOCK.SH) | LOCK.NB);
        } else {
          const cmd = l.flag === FL_KIND.OFD ? F.OFD_SETLK : F.SETLK;
          r = tr.task.callRaw('fcntl', l.fd, cmd, inBuf(FLOCK.encode({ l_type: l.type, l_whence: SEEK.SET, l_start: l.start, l_len: l.len })));
        }
        if (r < 0n) {
          throw new StasisError(ErrorCodes.RESTORE_FAILED, `cannot take the ${KIND_NAMES[l.flag]} lock of fd ${l.fd} again (errno ${-r}): is the file locked by another process?`);
        }
      }
    },
  }],
});

/** Two flock/OFD locks seen through fds of processes of the tree (our pids): the same open file description? */
function sharesFile(p1: number, fd1: number, p2: number, fd2: number): boolean {
  if (p1 === p2 && fd1 === fd2) return true;
  try {
    return kcmp(p1, p2, abi.KCMP.FILE, fd1, fd2) === 0;
  } catch {
    return false;
  }
}
