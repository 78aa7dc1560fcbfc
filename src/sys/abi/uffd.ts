// userfaultfd (include/uapi/linux/userfaultfd.h) and PAGEMAP_SCAN
// (include/uapi/linux/fs.h, 6.7+): what write tracking without soft-dirty
// uses. Debian's headers predate UFFD_FEATURE_WP_ASYNC and PAGEMAP_SCAN: the
// values are the kernel's.
import { struct } from './struct';

/** _IOC(dir, type, nr, size) on x86-64. */
function ioc(dir: number, type: number, nr: number, size: number): number {
  return ((dir << 30) | (size << 16) | (type << 8) | nr) >>> 0;
}
const IOC_WRITE = 1;
const IOC_READ = 2;
const iowr = (type: number, nr: number, size: number) => ioc(IOC_READ | IOC_WRITE, type, nr, size);
const ior = (type: number, nr: number, size: number) => ioc(IOC_READ, type, nr, size);

/** userfaultfd(2) flags (besides O_CLOEXEC, O_NONBLOCK): only faults from user mode (needs no privilege). */
export const UFFD_USER_MODE_ONLY = 1;
export const UFFD_API = 0xaa;
export const UFFD_FEATURE = {
  EVENT_FORK: 1 << 1, EVENT_REMAP: 1 << 2, EVENT_REMOVE: 1 << 3, EVENT_UNMAP: 1 << 6,
  WP_HUGETLBFS_SHMEM: 1 << 12, WP_UNPOPULATED: 1 << 13, WP_ASYNC: 1 << 15,
} as const;
/** Set by the kernel in ctx->features once UFFDIO_API is done (shows in fdinfo's API line). */
export const UFFD_FEATURE_INITIALIZED = 2 ** 31;
export const UFFDIO_REGISTER_MODE = { MISSING: 1, WP: 2, MINOR: 4 } as const;
export const UFFDIO_WRITEPROTECT_MODE = { WP: 1, DONTWAKE: 2 } as const;

/** struct uffdio_api */
export const UFFDIO_API_ARG = struct({ api: 'u64', features: 'u64', ioctls: 'u64' });
/** struct uffdio_range */
export const UFFDIO_RANGE = struct({ start: 'u64', len: 'u64' });
/** struct uffdio_register: range, mode, ioctls (out). */
export const UFFDIO_REGISTER_ARG = struct({ start: 'u64', len: 'u64', mode: 'u64', ioctls: 'u64' });
/** struct uffdio_writeprotect: range, mode. */
export const UFFDIO_WRITEPROTECT_ARG = struct({ start: 'u64', len: 'u64', mode: 'u64' });

/** struct uffdio_copy: dst, src, len, mode; copy (out: bytes copied, or -errno). */
export const UFFDIO_COPY_ARG = struct({ dst: 'u64', src: 'u64', len: 'u64', mode: 'u64', copy: 'i64' });
/** struct uffdio_zeropage: range, mode; zeropage (out: bytes zeroed, or -errno). */
export const UFFDIO_ZEROPAGE_ARG = struct({ start: 'u64', len: 'u64', mode: 'u64', zeropage: 'i64' });
/** struct uffd_msg (packed, 32 bytes): event, then the argument union at 8. */
export const UFFD_MSG = struct({ event: 'u8', reserved1: 'u8', reserved2: 'u16', reserved3: 'u32', a0: 'u64', a1: 'u64', a2: 'u64' });
const UFFDIO = 0xaa;
export const UFFDIO_IOC = {
  API: iowr(UFFDIO, 0x3f, UFFDIO_API_ARG.size),
  REGISTER: iowr(UFFDIO, 0x00, UFFDIO_REGISTER_ARG.size),
  UNREGISTER: ior(UFFDIO, 0x01, UFFDIO_RANGE.size),
  WRITEPROTECT: iowr(UFFDIO, 0x06, UFFDIO_WRITEPROTECT_ARG.size),
  WAKE: ior(UFFDIO, 0x02, UFFDIO_RANGE.size),
  COPY: iowr(UFFDIO, 0x03, UFFDIO_COPY_ARG.size),
  ZEROPAGE: iowr(UFFDIO, 0x04, UFFDIO_ZEROPAGE_ARG.size),
} as const;

/** uffd_msg.event; arguments: PAGEFAULT (flags, address), FORK (ufd: u32 at a0), REMAP (from, to, len), REMOVE/UNMAP (start, end). */
export const UFFD_EVENT = { PAGEFAULT: 0x12, FORK: 0x13, REMAP: 0x14, REMOVE: 0x15, UNMAP: 0x16 } as const;

/** PAGE_IS_* categories of PAGEMAP_SCAN. */
export const PAGE_IS = {
  WPALLOWED: 1 << 0, WRITTEN: 1 << 1, FILE: 1 << 2, PRESENT: 1 << 3, SWAPPED: 1 << 4, PFNZERO: 1 << 5,
  HUGE: 1 << 6, SOFT_DIRTY: 1 << 7, GUARD: 1 << 8,
} as const;
/** PAGEMAP_SCAN flags: write-protect what matched; fail (EPERM) on a VMA not registered for async WP. */
export const PM_SCAN = { WP_MATCHING: 1 << 0, CHECK_WPASYNC: 1 << 1 } as const;
/** struct pm_scan_arg */
export const PM_SCAN_ARG = struct({
  size: 'u64', flags: 'u64', start: 'u64', end: 'u64', walk_end: 'u64', vec: 'u64', vec_len: 'u64', max_pages: 'u64',
  category_inverted: 'u64', category_mask: 'u64', category_anyof_mask: 'u64', return_mask: 'u64',
});
/** struct page_region */
export const PAGE_REGION = struct({ start: 'u64', end: 'u64', categories: 'u64' });
export const PAGEMAP_SCAN = iowr(0x66 /* 'f' */, 16, PM_SCAN_ARG.size);
