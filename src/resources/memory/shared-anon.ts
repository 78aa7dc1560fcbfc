// Shared anonymous memory (MAP_SHARED|MAP_ANONYMOUS, "/dev/zero (deleted)"):
// one shmem object however many processes or VMAs map it (a parent's mapping
// inherited by its children, futexes in it). Each VMA names its object by
// inode (vma_entry.shmid). At restore the object is made once, by us, at the
// largest size any VMA of the checkpoint needs, and given to the first task
// that maps it; every later VMA of that object maps the same file, taken from
// that task's /proc/PID/map_files. Each process's pages of it are then
// written in as before (the same bytes: all were dumped frozen together).
import * as fs from 'node:fs';
import { sys, sysTry, abi } from '../../sys';
import type { Msg } from '../../images/schema';
import { VMA } from '../../images/criu';
import { StasisError, ErrorCodes } from '../../errors';
import { giveFd } from '../../compel/give-fd';
import type { RestoreCtx, TaskRestore } from '../../unit/restore-ctx';
import type { LoadedMm } from './load';

const { MAP, PROT, O } = abi;

interface Objects {
  /** Bytes each object needs: the furthest end (pgoff + length) of its VMAs. */
  size: Map<bigint, bigint>;
  /** Where an object was mapped first: pid (as we see it) and address. */
  first: Map<bigint, { pid: number; at: bigint }>;
}

const byRestore = new WeakMap<RestoreCtx, Objects>();

function objectsOf(ctx: RestoreCtx, all: Map<number, LoadedMm>): Objects {
  let o = byRestore.get(ctx);
  if (!o) {
    o = { size: new Map(), first: new Map() };
    for (const m of all.values()) {
      for (const v of m.mm.vmas ?? []) {
        if (!(v.status & VMA.ANON_SHARED)) continue;
        const end = v.pgoff + (v.end - v.start);
        if (end > (o.size.get(v.shmid) ?? 0n)) o.size.set(v.shmid, end);
      }
    }
    byRestore.set(ctx, o);
  }
  return o;
}

/** A new shmem object of `size` bytes, as an fd of ours. */
function newObject(size: bigint): number {
  const at = sys('mmap', 0, size, PROT.READ | PROT.WRITE, MAP.SHARED | MAP.ANONYMOUS, -1, 0);
  try {
    return fs.openSync(`/proc/self/map_files/${at.toString(16)}-${(BigInt(at) + size).toString(16)}`, O.RDWR | O.CLOEXEC);
  } finally {
    sysTry('munmap', at, size);
  }
}

/** The file of the VMA of `pid` that holds address `at`, as an fd of ours. */
function openMapped(pid: number, at: bigint): number {
  const dir = `/proc/${pid}/map_files`;
  for (const name of fs.readdirSync(dir)) {
    const [s, e] = name.split('-').map((x) => BigInt(`0x${x}`));
    if (s <= at && at < e) return fs.openSync(`${dir}/${name}`, O.RDWR | O.CLOEXEC);
  }
  throw new StasisError(ErrorCodes.RESTORE_FAILED, `shared anonymous memory at ${at.toString(16)} of pid ${pid} is gone before its other users are restored`);
}

/**
 * An fd in the task (into `fds`) for each of its shared anonymous VMAs: the
 * object's file, made now or shared with the task that mapped it first. The
 * caller maps them with it (not MAP_ANONYMOUS) and closes the fds.
 */
export function sharedAnonFds(ctx: RestoreCtx, tr: TaskRestore, all: Map<number, LoadedMm>, vmas: Msg<'vma_entry'>[], fds: Map<Msg<'vma_entry'>, number>): void {
  const o = objectsOf(ctx, all);
  // Our fd of each object this task maps (it maps none of them yet).
  const ours = new Map<bigint, number>();
  try {
    for (const v of vmas) {
      if (!(v.status & VMA.ANON_SHARED)) continue;
      let fd = ours.get(v.shmid);
      if (fd === undefined) {
        const first = o.first.get(v.shmid);
        ours.set(v.shmid, (fd = first ? openMapped(first.pid, first.at) : newObject(o.size.get(v.shmid)!)));
      }
      fds.set(v, giveFd(tr.task, fd));
    }
  } finally {
    for (const fd of ours.values()) fs.closeSync(fd);
  }
  for (const v of vmas) if (v.status & VMA.ANON_SHARED && !o.first.has(v.shmid)) o.first.set(v.shmid, { pid: tr.task.pid, at: v.start });
}
