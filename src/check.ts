// `stasis check`: which kernel features stasis needs are present here.
import * as fs from 'node:fs';
import { abi, sysTry, addressOf, kcmp, uffdApi } from './sys';
import { errnoName } from './errors';

export interface Feature { name: string; ok: boolean; needed: boolean; detail: string }

function probe(name: string, needed: boolean, f: () => string | true): Feature {
  try {
    const r = f();
    return { name, needed, ok: r === true, detail: r === true ? 'ok' : r };
  } catch (e) {
    return { name, needed, ok: false, detail: (e as Error).message };
  }
}

function ret(r: number, okIf: (r: number) => boolean = (x) => x >= 0): string | true {
  return okIf(r) ? true : errnoName(-r);
}

export function checkFeatures(): Feature[] {
  const self = process.pid;
  return [
    probe('ptrace PTRACE_SEIZE/INTERRUPT', true, () => {
      // Seizing needs a process we are allowed to trace; probe the request on
      // pid 0 and expect ESRCH (EIO/EINVAL would mean the request is unknown).
      const r = sysTry('ptrace', abi.PTRACE.SEIZE, 0x7ffffffe, 0, 0);
      return r === -3 ? true : errnoName(-r);
    }),
    probe('/proc/PID/pagemap', true, () => { fs.closeSync(fs.openSync(`/proc/${self}/pagemap`, 'r')); return true; }),
    probe('/proc/PID/mem', true, () => { fs.closeSync(fs.openSync(`/proc/${self}/mem`, 'r')); return true; }),
    probe('process_vm_readv', true, () => {
      const a = Buffer.from('x'), b = Buffer.alloc(1);
      const liov = Buffer.alloc(16), riov = Buffer.alloc(16);
      liov.writeBigUInt64LE(addressOf(b)); liov.writeBigUInt64LE(1n, 8);
      riov.writeBigUInt64LE(addressOf(a)); riov.writeBigUInt64LE(1n, 8);
      return ret(sysTry('process_vm_readv', self, addressOf(liov), 1, addressOf(riov), 1, 0));
    }),
    probe('kcmp (CONFIG_CHECKPOINT_RESTORE)', true, () => (kcmp(self, self, abi.KCMP.VM) === 0 ? true : 'unexpected result')),
    probe('pidfd_open / pidfd_getfd', false, () => {
      const fd = sysTry('pidfd_open', self, 0);
      if (fd < 0) return errnoName(-fd);
      const g = sysTry('pidfd_getfd', fd, 0, 0);
      sysTry('close', fd);
      if (g >= 0) sysTry('close', g);
      return ret(g);
    }),
    probe('PTRACE_GET_RSEQ_CONFIGURATION', true, () => {
      const r = sysTry('ptrace', abi.PTRACE.GET_RSEQ_CONFIGURATION, 0x7ffffffe, 0, 0);
      return r === -3 ? true : errnoName(-r);
    }),
    probe('prctl(PR_SET_MM, PR_SET_MM_MAP)', true, () => {
      const size = Buffer.alloc(4);
      return ret(sysTry('prctl', abi.PR.SET_MM, abi.PR_SET_MM.MAP_SIZE, addressOf(size), 0, 0));
    }),
    probe('clone3 with set_tid', true, () => {
      // clone3 with an invalid size answers EINVAL when it exists, ENOSYS otherwise.
      const r = sysTry('clone3', 0, 0);
      return r === -22 ? true : errnoName(-r);
    }),
    probe('/proc/PID/task/TID/children', true, () => { fs.readFileSync(`/proc/${self}/task/${self}/children`); return true; }),
    probe('soft-dirty tracking (incremental dumps)', false, () => {
      // Bit 55 of pagemap never sets without CONFIG_MEM_SOFT_DIRTY.
      const fd = fs.openSync(`/proc/${self}/pagemap`, 'r');
      try {
        const b = Buffer.alloc(8);
        const probeBuf = Buffer.alloc(4096, 1);
        fs.readSync(fd, b, 0, 8, Number(addressOf(probeBuf) / 4096n) * 8);
        return (b.readBigUInt64LE(0) >> 55n) & 1n ? true : 'not available (CONFIG_MEM_SOFT_DIRTY off)';
      } finally { fs.closeSync(fd); }
    }),
    probe('userfaultfd', false, () => (fs.existsSync('/dev/userfaultfd') ? true : 'no /dev/userfaultfd')),
    probe('memory tracking (pre-dump, incremental dumps: async userfaultfd write-protect)', false, memTrackProbe),
  ];
}

/**
 * What pre-dump needs: a userfaultfd that offers UFFD_FEATURE_WP_ASYNC (its
 * PAGEMAP_SCAN comes with it, Linux 6.7). criu calls this mem_track.
 */
export function memTrackProbe(): true | string {
  const fd = sysTry('userfaultfd', abi.O.CLOEXEC | abi.O.NONBLOCK | abi.UFFD_USER_MODE_ONLY);
  if (fd < 0) return `userfaultfd: ${errnoName(-fd)}`;
  try {
    const offered = Number(uffdApi(fd, 0));
    return offered & abi.UFFD_FEATURE.WP_ASYNC ? true : 'no UFFD_FEATURE_WP_ASYNC';
  } catch (e) {
    return (e as Error).message;
  } finally { sysTry('close', fd); }
}
