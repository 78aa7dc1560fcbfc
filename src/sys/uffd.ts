// userfaultfd ioctls on our copy of a task's userfaultfd, and PAGEMAP_SCAN on
// its /proc/PID/pagemap. Both act on the mm the userfaultfd was opened in
// (ctx->mm) or the pagemap names, not on ours: stasis drives them from outside.
import { sys, sysTry } from './call';
import { addressOf } from './native';
import {
  UFFD_API, UFFDIO_IOC, UFFDIO_API_ARG, UFFDIO_REGISTER_ARG, UFFDIO_WRITEPROTECT_ARG, UFFDIO_REGISTER_MODE,
  UFFDIO_WRITEPROTECT_MODE, UFFDIO_RANGE, PAGEMAP_SCAN, PM_SCAN_ARG, PAGE_REGION, UFFDIO_COPY_ARG, UFFDIO_ZEROPAGE_ARG,
} from './abi';

/** UFFDIO_API: enable `features` (once per userfaultfd); returns what the kernel offers. */
export function uffdApi(fd: number, features: number): bigint {
  const b = UFFDIO_API_ARG.encode({ api: UFFD_API, features });
  sys('ioctl', fd, UFFDIO_IOC.API, addressOf(b), 0, 0, 0, 'UFFDIO_API');
  return UFFDIO_API_ARG.decode(b).features;
}

/** UFFDIO_REGISTER in write-protect mode; returns -errno (a VMA that cannot be registered is an answer). */
export function uffdRegisterWp(fd: number, start: bigint, len: bigint): number {
  const b = UFFDIO_REGISTER_ARG.encode({ start, len, mode: UFFDIO_REGISTER_MODE.WP });
  return sysTry('ioctl', fd, UFFDIO_IOC.REGISTER, addressOf(b));
}

/** UFFDIO_REGISTER in missing mode (lazy restore); returns -errno. */
export function uffdRegisterMissing(fd: number, start: bigint, len: bigint): number {
  const b = UFFDIO_REGISTER_ARG.encode({ start, len, mode: UFFDIO_REGISTER_MODE.MISSING });
  return sysTry('ioctl', fd, UFFDIO_IOC.REGISTER, addressOf(b));
}

const copyArg = Buffer.alloc(UFFDIO_COPY_ARG.size);
/**
 * UFFDIO_COPY of `len` bytes at `src` (our address) to `dst` in the
 * userfaultfd's mm. Returns bytes copied (> 0, maybe fewer than asked: the
 * kernel stops at a page already there) or -errno for the first page
 * (EEXIST: there; EAGAIN: an event must be read first; ENOENT/ESRCH: gone).
 */
export function uffdCopy(fd: number, dst: bigint, src: bigint, len: number): number {
  UFFDIO_COPY_ARG.encode({ dst, src, len, mode: 0, copy: 0 }, copyArg);
  const r = sysTry('ioctl', fd, UFFDIO_IOC.COPY, addressOf(copyArg));
  const copied = Number(copyArg.readBigInt64LE(UFFDIO_COPY_ARG.offsets.copy));
  if (r === 0) return len;
  // The ioctl failed before the copy field was written (EFAULT on the argument...).
  return copied !== 0 ? copied : r;
}

/** UFFDIO_ZEROPAGE over [start, start+len): bytes zeroed or -errno (as uffdCopy). */
export function uffdZeropage(fd: number, start: bigint, len: number): number {
  const b = UFFDIO_ZEROPAGE_ARG.encode({ start, len, mode: 0, zeropage: 0 });
  const r = sysTry('ioctl', fd, UFFDIO_IOC.ZEROPAGE, addressOf(b));
  const done = Number(b.readBigInt64LE(UFFDIO_ZEROPAGE_ARG.offsets.zeropage));
  if (r === 0) return len;
  return done !== 0 ? done : r;
}

/** UFFDIO_WAKE: wake threads waiting on faults in the range (after an EEXIST nobody else woke them for). */
export function uffdWake(fd: number, start: bigint, len: bigint): number {
  const b = UFFDIO_RANGE.encode({ start, len });
  return sysTry('ioctl', fd, UFFDIO_IOC.WAKE, addressOf(b));
}

/** UFFDIO_UNREGISTER (clears the range's write protection too); -errno on failure. */
export function uffdUnregister(fd: number, start: bigint, len: bigint): number {
  const b = UFFDIO_RANGE.encode({ start, len });
  return sysTry('ioctl', fd, UFFDIO_IOC.UNREGISTER, addressOf(b));
}

/** UFFDIO_WRITEPROTECT: protect (`on`) or unprotect a registered range. */
export function uffdWriteProtect(fd: number, start: bigint, len: bigint, on: boolean): void {
  const b = UFFDIO_WRITEPROTECT_ARG.encode({ start, len, mode: on ? UFFDIO_WRITEPROTECT_MODE.WP : 0 });
  sys('ioctl', fd, UFFDIO_IOC.WRITEPROTECT, addressOf(b), 0, 0, 0, 'UFFDIO_WRITEPROTECT');
}

const REGIONS = 4096;
let regionBuf: Buffer | undefined;

/**
 * PAGEMAP_SCAN over [start, end) of the pagemap open as `pmFd`: the ranges of
 * pages having every category of `mask`, merged in address order. `flags`:
 * PM_SCAN_* (WP_MATCHING write-protects what it reports, atomically per page).
 */
export function pagemapScan(pmFd: number, start: bigint, end: bigint, flags: number, mask: number): [bigint, bigint][] {
  const out: [bigint, bigint][] = [];
  for (const r of pagemapScanRegions(pmFd, start, end, flags, { mask, returned: mask })) {
    const last = out[out.length - 1];
    if (last && last[1] === r.start) last[1] = r.end;
    else out.push([r.start, r.end]);
  }
  return out;
}

export interface PageRegion { start: bigint; end: bigint; categories: number }

/**
 * PAGEMAP_SCAN over [start, end): regions of pages having every category of
 * `mask` and at least one of `anyOf` (when given), with their `returned`
 * categories (a region per run of pages alike in those).
 */
export function pagemapScanRegions(pmFd: number, start: bigint, end: bigint, flags: number, cat: { mask?: number; anyOf?: number; returned: number }): PageRegion[] {
  const vec = (regionBuf ??= Buffer.alloc(REGIONS * PAGE_REGION.size));
  const out: PageRegion[] = [];
  const arg = Buffer.alloc(PM_SCAN_ARG.size);
  for (let at = start; at < end; ) {
    PM_SCAN_ARG.encode({
      size: PM_SCAN_ARG.size, flags, start: at, end, vec: addressOf(vec), vec_len: REGIONS,
      category_mask: cat.mask ?? 0, category_anyof_mask: cat.anyOf ?? 0, return_mask: cat.returned,
    }, arg);
    const n = sys('ioctl', pmFd, PAGEMAP_SCAN, addressOf(arg), 0, 0, 0, 'PAGEMAP_SCAN');
    for (let i = 0; i < n; i++) {
      const o = i * PAGE_REGION.size;
      out.push({
        start: vec.readBigUInt64LE(o + PAGE_REGION.offsets.start), end: vec.readBigUInt64LE(o + PAGE_REGION.offsets.end),
        categories: Number(vec.readBigUInt64LE(o + PAGE_REGION.offsets.categories)),
      });
    }
    // Not full: the scan is complete (walk_end was seen short of the end after a complete
    // scan here, which made a loop on walk_end report regions twice). Full: on from the end
    // of the last region (the next call may report its continuation as a region of its own).
    if (n < REGIONS) break;
    const next = out[out.length - 1].end;
    if (next <= at) break;
    at = next;
  }
  return out;
}
