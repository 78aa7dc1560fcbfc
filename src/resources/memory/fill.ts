// Writing pages into a restored task's memory, the cheapest exact way for
// each VMA (measured on this project's 2-core machine, 1 GiB: the copy
// through /proc/PID/mem ~640 ms with the range populated first, ~550 ms
// through process_vm_writev, ~300 ms through UFFDIO_COPY):
//
// - UFFDIO_COPY into private anonymous VMAs where a transparent huge page
//   would never be used: the kernel allocates each page with its contents,
//   never zeroing it first, where populating a range zeroes it all and then
//   the copy writes it again. Not where THP may apply: UFFDIO_COPY makes
//   small pages, and a process that had huge pages would come back without
//   them (slower to run, and to dump). The userfaultfd is opened in the task
//   (it binds to the task's mm), kept by us only, registered over whole VMAs
//   (never splitting one) in missing mode, and closed once the pages are in
//   (closing unregisters). No fault is ever served: every page it covers is
//   copied in before the task runs.
// - Elsewhere: populated by madvise(MADV_POPULATE_WRITE) (restorePages),
//   then written with process_vm_writev (the VMAs are writable while filled:
//   restore.ts maps them so), falling back to /proc/PID/mem where it fails.
import * as fs from 'node:fs';
import { abi, processVmWritev, uffdApi, uffdRegisterMissing, uffdCopy, addressOf } from '../../sys';
import { openedInTask } from '../../compel/give-fd';
import type { TaskRestore } from '../../unit/restore-ctx';
import type { Msg } from '../../images/schema';
import type { LoadedMm } from './load';
import { isLazyVma } from './lazy';
import { log } from '../../log';
import { StasisError, ErrorCodes } from '../../errors';

const { O, MADV, UFFD_USER_MODE_ONLY } = abi;
const HPAGE = 2n << 20n;

type ThpMode = 'always' | 'madvise' | 'never';
let thpMode: ThpMode | undefined;

/** /sys/kernel/mm/transparent_hugepage/enabled, the bracketed word. */
export function parseThpMode(text: string): ThpMode {
  const m = /\[(always|madvise|never)\]/.exec(text);
  return (m?.[1] as ThpMode | undefined) ?? 'always';
}

function systemThp(): ThpMode {
  if (thpMode === undefined) {
    try { thpMode = parseThpMode(fs.readFileSync('/sys/kernel/mm/transparent_hugepage/enabled', 'utf8')); } catch { thpMode = 'never'; }
  }
  return thpMode;
}

/** Whether anonymous memory of this VMA may get transparent huge pages (then it is populated, not copied in by userfaultfd). */
export function mayUseThp(v: Msg<'vma_entry'>, mode: ThpMode, thpDisabled: boolean): boolean {
  if (mode === 'never' || thpDisabled) return false;
  const madv = v.madv ?? 0n;
  if ((madv >> BigInt(MADV.NOHUGEPAGE)) & 1n) return false;
  if (mode === 'madvise' && !((madv >> BigInt(MADV.HUGEPAGE)) & 1n)) return false;
  // Room for one aligned huge page.
  const first = (v.start + HPAGE - 1n) & ~(HPAGE - 1n);
  return first + HPAGE <= v.end;
}

export class PageFiller {
  private mem = -1;
  private usePvw = true;

  private constructor(private readonly pid: number, private readonly uffd: number, private readonly copied: [bigint, bigint][]) {}

  /** For the task of `tr`; `wanted(start, end)`: whether the VMA gets pages here. */
  static open(tr: TaskRestore, m: LoadedMm, wanted: (start: bigint, end: bigint) => boolean): PageFiller {
    const mode = systemThp();
    const vmas = (m.mm.vmas ?? []).filter((v) => isLazyVma(v) && !mayUseThp(v, mode, !!m.mm.thp_disabled) && wanted(v.start, v.end));
    if (!vmas.length) return new PageFiller(tr.task.pid, -1, []);
    const t = tr.task;
    // User-mode faults only (no privilege needed): none is ever served anyway.
    const fd = openedInTask(t, 'userfaultfd', O.CLOEXEC | O.NONBLOCK | UFFD_USER_MODE_ONLY);
    if (fd < 0) {
      log.info(`pages of ${t.pid}: no userfaultfd in the task (errno ${-fd}): written through process_vm_writev`);
      return new PageFiller(t.pid, -1, []);
    }
    const copied: [bigint, bigint][] = [];
    try {
      uffdApi(fd, 0);
      for (const v of vmas) if (uffdRegisterMissing(fd, v.start, v.end - v.start) >= 0) copied.push([v.start, v.end]);
    } catch (e) {
      fs.closeSync(fd);
      throw e;
    }
    return new PageFiller(t.pid, fd, copied);
  }

  /** Our copy of the task's userfaultfd (-1: none): UFFDIO_COPY on it from any of our threads. */
  get copyFd(): number { return this.uffd; }

  /** Whether [start, end) lies in a VMA filled by UFFDIO_COPY (not to be populated first). */
  copies(start: bigint, end: bigint): boolean {
    return this.copied.some(([a, b]) => a <= start && end <= b);
  }

  /** `len` bytes of `buf` to `at` in the task. */
  write(at: bigint, buf: Buffer, len: number): void {
    let done = 0;
    if (this.uffd >= 0 && this.copies(at, at + BigInt(len))) {
      // Short: a page there already (EEXIST); the rest goes the other way.
      const c = uffdCopy(this.uffd, at, addressOf(buf), len);
      if (c === len) return;
      if (c > 0) done = c;
    }
    if (this.usePvw) {
      try {
        const n = processVmWritev(this.pid, at + BigInt(done), buf.subarray(done, len));
        if (n === len - done) return;
        done += n;
      } catch {
        this.usePvw = false; // a page it cannot write (read-only...): /proc/PID/mem from now on
      }
    }
    if (this.mem < 0) this.mem = fs.openSync(`/proc/${this.pid}/mem`, 'r+');
    if (fs.writeSync(this.mem, buf, done, len - done, Number(at) + done) !== len - done) throw new StasisError(ErrorCodes.RESTORE_FAILED, `short write of pages at ${at.toString(16)}`);
  }

  close(): void {
    if (this.uffd >= 0) fs.closeSync(this.uffd);
    if (this.mem >= 0) fs.closeSync(this.mem);
  }
}
