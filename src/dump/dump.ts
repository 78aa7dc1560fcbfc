// `stasis dump`: freeze, collect, write images, then release or kill.
// The target is only killed after every image is written; any failure
// releases it untouched (the parasite always cures itself first).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { abi, processVmReadv } from '../sys';
import { freezeProcess, release, killFrozen, type FrozenProcess } from '../freeze';
import { readStat, readStatus } from '../proc/proc';
import { withParasite } from '../compel/parasite';
import { ensureImageDir, writeImage } from '../images/image';
import { DumpCtx, type DumpOptions, type ProcessDump, type ThreadFacts } from './context';
import { dumpSigactions, dumpAltStack } from '../resources/signals';
import { dumpItimers } from '../resources/timers';
import { dumpMemory } from '../resources/memory';
import { dumpFiles, writeFilesImage } from '../resources/files';
import { dumpFs } from '../resources/fs';
import { dumpCore } from '../resources/core';

const { PROT, MAP, PR, PAGE_SIZE } = abi;

export const IMG_VERSION = 2; // CRIU_IMAGES_V1_1

export interface DumpResult {
  pid: number;
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
  ensureImageDir(opts.dir);
  // A half-written directory must never look like a complete dump: the
  // inventory goes last, and an old one goes first.
  fs.rmSync(path.join(opts.dir, 'inventory.img'), { force: true });
  ctx.step('start');
  const frozen: FrozenProcess = freezeProcess(pid);
  const tFrozen = process.hrtime.bigint();
  let done = false;
  try {
    ctx.step('seized');
    const pd: ProcessDump = {
      pid, frozen, stat: readStat(pid), status: readStatus(pid),
      ids: { vm_id: 1, files_id: 1, fs_id: 1, sighand_id: 1 },
      parasite: undefined as unknown as ProcessDump['parasite'],
      threads: new Map(), pagesId: ctx.allocPagesId(), taskCore: {}, mm: {},
    };
    ctx.step('proc');
    parasiteSession(pd);
    ctx.step('parasite');
    dumpMemory(ctx, pd);
    ctx.step('memory');
    dumpFiles(ctx, pd);
    dumpFs(ctx, pd);
    ctx.step('files');
    dumpCore(ctx, pd);
    ctx.step('core');
    writeImage(opts.dir, `ids-${pid}.img`, 'IDS', [['task_kobj_ids_entry', pd.ids]]);
    writeImage(opts.dir, 'pstree.img', 'PSTREE', [['pstree_entry', {
      pid, ppid: 0, pgid: pd.stat.pgrp, sid: pd.stat.session, threads: frozen.threads,
    }]]);
    writeFilesImage(ctx);
    ctx.step('images');
    writeImage(opts.dir, 'inventory.img', 'INVENTORY', [['inventory_entry', {
      img_version: IMG_VERSION, fdinfo_per_id: true, root_ids: pd.ids, ns_per_id: true, lsmtype: 0,
    }]]);
    ctx.step('inventory');
    done = true;
  } finally {
    if (done && !opts.leaveRunning) killFrozen(frozen);
    else release(frozen);
  }
  const t1 = process.hrtime.bigint();
  return {
    pid, threads: frozen.threads.length, pages: ctx.pagesCount, bytes: ctx.pagesBytes,
    ms: Number(t1 - t0) / 1e6, frozenMs: Number(t1 - tFrozen) / 1e6,
  };
}
