// `stasis dump`: freeze, collect, write images, then release or kill.
// The target is only killed after every image is written; any failure
// releases it untouched (the parasite always cures itself first).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { abi, processVmReadv, kcmp, sysTry } from '../sys';
import { repairOff } from '../resources/tcp-stream';
import { freezeTree, release, killFrozen, checkDumpable, type FrozenProcess } from '../freeze';
import { StasisError, ErrorCodes } from '../errors';
import { readStat, readStatus } from '../proc/proc';
import { withParasite } from '../compel/parasite';
import { ensureImageDir, writeImage } from '../images/image';
import { warmUp } from '../images/schema';
import { DumpCtx, type DumpOptions, type ProcessDump, type ThreadFacts } from './context';
import { dumpSigactions, dumpAltStack } from '../resources/signals';
import { dumpItimers, dumpPosixTimers } from '../resources/timers';
import { dumpMemory } from '../resources/memory';
import { dumpFiles, writeFilesImage } from '../resources/files';
import { dumpFs } from '../resources/fs';
import { dumpCore } from '../resources/core';

const { PROT, MAP, PR, PAGE_SIZE, KCMP } = abi;

export const IMG_VERSION = 2; // CRIU_IMAGES_V1_1

export interface DumpResult {
  pid: number;
  processes: number;
  threads: number;
  pages: number;
  bytes: number;
  ms: number;
  /** Time the process was frozen. */
  frozenMs: number;
}

function readWord(pid: number, addr: bigint, buf: Buffer): bigint {
  processVmReadv(pid, addr, buf, 8);
  return buf.readBigUInt64LE(0);
}

/** What only the task can tell: one parasite session per thread. */
function parasiteSession(pd: ProcessDump): void {
  withParasite(pd.pid, (p) => {
    const scratch = p.syscall('mmap', 0, PAGE_SIZE, PROT.READ | PROT.WRITE, MAP.PRIVATE | MAP.ANONYMOUS, -1, 0);
    const word = Buffer.alloc(8);
    try {
      const childSubreaper = (p.syscall('prctl', PR.GET_CHILD_SUBREAPER, scratch), readWord(pd.pid, scratch, word));
      pd.parasite = {
        brk: p.syscall('brk', 0),
        dumpable: Number(p.syscall('prctl', PR.GET_DUMPABLE)),
        secbits: Number(p.syscall('prctl', 27 /* PR_GET_SECUREBITS */)),
        childSubreaper: (childSubreaper & 0xffffffffn) !== 0n,
        sigactions: dumpSigactions(p, scratch),
        itimers: dumpItimers(p, scratch),
        posixTimers: dumpPosixTimers(p, scratch),
      };
      for (const tid of pd.frozen.threads) {
        const one = (q: typeof p): ThreadFacts => {
          q.syscall('prctl', PR.GET_TID_ADDRESS, scratch);
          const clearTidAddr = readWord(pd.pid, scratch, word);
          q.syscall('prctl', PR.GET_PDEATHSIG, scratch);
          const pdeathSig = Number(readWord(pd.pid, scratch, word) & 0xffffffffn);
          return { clearTidAddr, pdeathSig, sas: dumpAltStack(q, scratch) };
        };
        // Threads share the leader's code page: an inner parasite saves our
        // patched bytes and puts them back, the outer one the originals.
        pd.threads.set(tid, tid === pd.pid ? one(p) : withParasite(tid, one, { codeAddr: p.codeAddress }));
      }
    } finally {
      p.syscall('munmap', scratch, PAGE_SIZE);
    }
  });
}

export function dump(pid: number, opts: DumpOptions): DumpResult {
  const t0 = process.hrtime.bigint();
  const ctx = new DumpCtx(opts);
  // Refuse what cannot be dumped before touching the images directory.
  checkDumpable(pid);
  ensureImageDir(opts.dir);
  warmUp();
  // A half-written directory must never look like a complete dump: the
  // inventory goes last, and an old one goes first.
  fs.rmSync(path.join(opts.dir, 'inventory.img'), { force: true });
  ctx.step('start');
  const tree: FrozenProcess[] = freezeTree(pid);
  const tFrozen = process.hrtime.bigint();
  let done = false;
  try {
    ctx.step('seized');
    const pds: ProcessDump[] = tree.map((frozen, i) => ({
      pid: frozen.pid, frozen, stat: readStat(frozen.pid), status: readStatus(frozen.pid),
      ids: { vm_id: i + 1, files_id: i + 1, fs_id: i + 1, sighand_id: i + 1 },
      parasite: undefined as unknown as ProcessDump['parasite'],
      threads: new Map(), pagesId: ctx.allocPagesId(), mm: {},
    }));
    checkNotShared(pds);
    for (const pd of pds) {
      // Restoring without the filter would silently drop a security boundary.
      const mode = Number(pd.status.get('Seccomp') ?? 0);
      if (mode !== 0) throw new StasisError(ErrorCodes.UNSUPPORTED, `pid ${pd.pid} runs under seccomp (${mode === 1 ? 'strict' : 'filter'} mode); seccomp is not supported yet`);
    }
    ctx.step('proc');
    for (const pd of pds) parasiteSession(pd);
    ctx.step('parasite');
    for (const pd of pds) dumpMemory(ctx, pd);
    ctx.step('memory');
    for (const pd of pds) {
      dumpFiles(ctx, pd);
      dumpFs(ctx, pd);
    }
    ctx.step('files');
    for (const pd of pds) dumpCore(ctx, pd);
    ctx.step('core');
    for (const pd of pds) writeImage(opts.dir, `ids-${pd.pid}.img`, 'IDS', [['task_kobj_ids_entry', pd.ids]]);
    writeImage(opts.dir, 'pstree.img', 'PSTREE', pds.map((pd) => ['pstree_entry', {
      pid: pd.pid, ppid: pd.frozen.ppid, pgid: pd.stat.pgrp, sid: pd.stat.session, threads: pd.frozen.threads,
    }]));
    writeFilesImage(ctx);
    ctx.step('images');
    writeImage(opts.dir, 'inventory.img', 'INVENTORY', [['inventory_entry', {
      img_version: IMG_VERSION, fdinfo_per_id: true, root_ids: pds[0].ids, ns_per_id: true, lsmtype: 0,
    }]]);
    ctx.step('inventory');
    done = true;
  } finally {
    if (!done) fs.rmSync(path.join(opts.dir, 'inventory.img'), { force: true });
    const kill = done && !opts.leaveRunning;
    // Connections going on with the task leave repair mode before it runs.
    if (!kill) for (const s of ctx.repairSockets) repairOff(s);
    // Children first: a parent killed first could reap (or re-parent) them under us.
    for (const frozen of [...tree].reverse()) {
      if (kill) killFrozen(frozen);
      else release(frozen);
    }
    // Closed in repair mode, a killed task's connections vanish without a FIN or RST.
    for (const s of ctx.repairSockets) sysTry('close', s.fd);
  }
  const t1 = process.hrtime.bigint();
  return {
    pid, processes: tree.length, threads: tree.reduce((a, p) => a + p.threads.length, 0), pages: ctx.pagesCount, bytes: ctx.pagesBytes,
    ms: Number(t1 - t0) / 1e6, frozenMs: Number(t1 - tFrozen) / 1e6,
  };
}

/** Processes sharing an mm, fd table or fs struct without being threads (vfork, CLONE_VM...) are not supported. */
function checkNotShared(pds: ProcessDump[]): void {
  for (let i = 0; i < pds.length; i++) {
    for (let j = 0; j < i; j++) {
      for (const [type, what] of [[KCMP.VM, 'address space'], [KCMP.FILES, 'fd table'], [KCMP.FS, 'cwd/root (CLONE_FS)'], [KCMP.SIGHAND, 'signal handlers']] as const) {
        if (kcmp(pds[i].pid, pds[j].pid, type) === 0) {
          throw new StasisError(ErrorCodes.UNSUPPORTED, `processes ${pds[j].pid} and ${pds[i].pid} share their ${what} (vfork or clone without CLONE_THREAD); not supported yet`);
        }
      }
    }
  }
}
