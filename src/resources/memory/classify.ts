// Which kind of mapping each VMA is (CRIU's vma_entry status and flags), and
// which of its pages go into the image. Pure functions of /proc/PID/maps and
// smaps lines.
import { abi } from '../../sys';
import { VMA } from '../../images/criu';
import { StasisError, ErrorCodes } from '../../errors';
import { PM_PRESENT, PM_SWAP, PM_FILE, PM_GUARD, type Vma } from '../../proc/proc';

const { MAP, MADV } = abi;

/**
 * none: nothing (shared file mappings live in their file; vdso & co. are the
 * kernel's); anon: present or swapped pages; cow-copies: the anonymous
 * (written, copied-on-write) pages of a private file mapping; shared-anon:
 * present pages of MAP_SHARED|MAP_ANONYMOUS.
 */
export type PagePolicy = 'none' | 'anon' | 'cow-copies' | 'shared-anon';

export interface ClassifiedVma {
  vma: Vma;
  status: number;
  flags: number;
  policy: PagePolicy;
  /** Path of the backing file for file mappings. */
  file?: string;
  /** The file was deleted: it is carried as a ghost. */
  deleted?: boolean;
  memfd?: boolean;
}

function unsupported(v: Vma, what: string): StasisError {
  return new StasisError(ErrorCodes.UNSUPPORTED, `VMA ${v.start.toString(16)}-${v.end.toString(16)}: ${what} is not supported yet`);
}

export function classify(v: Vma): ClassifiedVma {
  const base = { vma: v };
  switch (v.path) {
    case '[vsyscall]': return { ...base, status: VMA.AREA_VSYSCALL, flags: MAP.PRIVATE | MAP.ANONYMOUS, policy: 'none' };
    case '[vdso]': return { ...base, status: VMA.AREA_REGULAR | VMA.AREA_VDSO, flags: MAP.PRIVATE | MAP.ANONYMOUS, policy: 'none' };
    case '[vvar]':
    case '[vvar_vclock]': return { ...base, status: VMA.AREA_REGULAR | VMA.AREA_VVAR, flags: MAP.PRIVATE | MAP.ANONYMOUS, policy: 'none' };
    case '[heap]': return { ...base, status: VMA.AREA_REGULAR | VMA.AREA_HEAP | VMA.ANON_PRIVATE, flags: MAP.PRIVATE | MAP.ANONYMOUS, policy: 'anon' };
    case '[stack]': return { ...base, status: VMA.AREA_REGULAR | VMA.AREA_STACK | VMA.ANON_PRIVATE, flags: MAP.PRIVATE | MAP.ANONYMOUS | MAP.GROWSDOWN, policy: 'anon' };
  }
  if (v.path === '' || (v.path.startsWith('[') && v.inode === 0)) {
    if (v.shared) throw unsupported(v, 'shared anonymous mapping without a backing object');
    return { ...base, status: VMA.AREA_REGULAR | VMA.ANON_PRIVATE, flags: MAP.PRIVATE | MAP.ANONYMOUS, policy: 'anon' };
  }
  // MAP_SHARED|MAP_ANONYMOUS shows as the deleted /dev/zero shmem file.
  if (v.path === '/dev/zero' && v.deleted) {
    if (v.shared) return { ...base, status: VMA.AREA_REGULAR | VMA.ANON_SHARED, flags: MAP.SHARED | MAP.ANONYMOUS, policy: 'shared-anon' };
    // Private anonymous memory has no path: this is such an object's file
    // (through map_files or an fd) mapped MAP_PRIVATE, reading through to
    // the object where not copied. Restored as plain anonymous memory, it
    // would no longer see the object's later writes.
    throw unsupported(v, 'private mapping of shared anonymous memory (a MAP_SHARED|MAP_ANONYMOUS object mapped again with MAP_PRIVATE)');
  }
  if (v.path.startsWith('/SYSV')) throw unsupported(v, 'System V shared memory');
  if (v.path.startsWith('/memfd:')) {
    // Shared: the contents live in the memfd (dumped with its inode); private: only the copies.
    const kind = v.shared ? VMA.FILE_SHARED : VMA.FILE_PRIVATE;
    return { ...base, status: VMA.AREA_REGULAR | VMA.AREA_MEMFD | kind, flags: v.shared ? MAP.SHARED : MAP.PRIVATE, policy: v.shared ? 'none' : 'cow-copies', memfd: true };
  }
  // An AIO completion ring (io_setup): its pages dumped, the ring made again by io_setup (aio.ts).
  if (v.path === '/[aio]' && v.deleted && v.shared) return { ...base, status: VMA.AREA_AIORING, flags: MAP.SHARED, policy: 'anon' };
  // A packet socket's rings mmap()ed (socket:[INODE]): the frames are the kernel's pages.
  if (v.path.startsWith('socket:[')) throw unsupported(v, `mapping of a socket's memory (${v.path}: a packet socket's rings, mmap()ed)`);
  if (!v.path.startsWith('/')) throw unsupported(v, `mapping of ${v.path}`);
  // Named by the kernel, not a file anyone deleted (an AIO ring is "/[aio] (deleted)").
  if (v.deleted && v.path.startsWith('/[')) throw unsupported(v, `mapping of a deleted kernel object (${v.path})`);
  // A deleted file is mapped again from its ghost (regfile.ts), the same inode as its fds'.
  const deleted = v.deleted || undefined;
  if (v.shared) return { ...base, status: VMA.AREA_REGULAR | VMA.FILE_SHARED, flags: MAP.SHARED, policy: 'none', file: v.path, deleted };
  return { ...base, status: VMA.AREA_REGULAR | VMA.FILE_PRIVATE, flags: MAP.PRIVATE, policy: 'cow-copies', file: v.path, deleted };
}

/** madvise() advice that shows in smaps VmFlags (two-letter names), as criu keeps it in vma_entry.madv. */
export const MADV_OF_VMFLAG: Record<string, number> = {
  rr: MADV.RANDOM, sr: MADV.SEQUENTIAL, dc: MADV.DONTFORK, mg: MADV.MERGEABLE, hg: MADV.HUGEPAGE,
  nh: MADV.NOHUGEPAGE, dd: MADV.DONTDUMP, wf: MADV.WIPEONFORK,
};

/** vma_entry.madv bits for a VMA's VmFlags. */
export function madvOf(vmFlags: string[]): bigint {
  let madv = 0n;
  for (const f of vmFlags) if (f in MADV_OF_VMFLAG) madv |= 1n << BigInt(MADV_OF_VMFLAG[f]);
  return madv;
}

/**
 * mmap() flags a VMA's VmFlags add to its kind's: locked ('lo'), no swap
 * reserved ('nr', MAP_NORESERVE), droppable ('dp', MAP_DROPPABLE: a mapping
 * type of its own, in place of MAP_PRIVATE).
 */
export function mapFlagsOf(flags: number, vmFlags: string[]): number {
  if (vmFlags.includes('lo')) flags |= MAP.LOCKED;
  if (vmFlags.includes('nr')) flags |= MAP.NORESERVE;
  if (vmFlags.includes('dp')) flags = (flags & ~MAP.PRIVATE) | MAP.DROPPABLE;
  return flags;
}

/** VmFlags of every VMA in smaps text, by start address. */
export function parseVmFlags(smaps: string): Map<bigint, string[]> {
  const out = new Map<bigint, string[]>();
  let cur = -1n;
  for (const line of smaps.split('\n')) {
    const m = /^([0-9a-f]+)-[0-9a-f]+ /.exec(line);
    if (m) cur = BigInt('0x' + m[1]);
    else if (line.startsWith('VmFlags:')) out.set(cur, line.slice(8).trim().split(/\s+/));
  }
  return out;
}

/** Whether a page with pagemap word `pm` goes into the image under `policy`. */
export function wanted(policy: PagePolicy, pm: bigint): boolean {
  // A guard page reads as swapped but holds nothing: a fault (memory/guards.ts).
  if (policy === 'none' || (pm & PM_GUARD) !== 0n) return false;
  // A private file page that was written is an anonymous copy; swapped ones too.
  if (policy === 'cow-copies') return ((pm & PM_PRESENT) !== 0n && (pm & PM_FILE) === 0n) || (pm & PM_SWAP) !== 0n;
  return (pm & (PM_PRESENT | PM_SWAP)) !== 0n;
}
