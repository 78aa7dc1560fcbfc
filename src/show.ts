// `stasis show DIR`: what a checkpoint holds, read through the same units
// that restore it (so it checks the images the same way), as typed data or
// as text.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { abi } from './sys';
import type { Msg } from './images/schema';
import { VMA, FD_TYPE_NAMES, FDINFO_CLOEXEC, TASK_STATE } from './images/criu';
import { loadCheckpoint } from './restore/load';
import { memoryUnit } from './resources/memory';
import { filesUnit, fileUnitOfType, memberOf } from './resources/files';
import { regFileUnit } from './resources/regfile';

const { PAGE_SIZE, PROT, MAP } = abi;

export interface ShownThread { tid: number; ip: string; sp: string; ax: string; orig_ax: string; fs_base: string }
export interface ShownVma { start: string; end: string; prot: string; backing: string; pages: number }
export interface ShownFd { fd: number; type: string; path?: string; flags: number; pos?: string; cloexec: boolean }

export interface ShownProcess {
  pid: number; ppid: number; pgid: number; sid: number; threads: number[];
  comm: string;
  state: 'alive' | 'stopped' | 'dead' | 'zombie' | 'unknown';
  regs: ShownThread[];
  vmas: ShownVma[];
  fds: ShownFd[];
  mm: { brk: string; start_brk: string; start_stack: string; exe?: string };
}

export interface ShownCheckpoint {
  dir: string;
  imgVersion: number;
  processes: ShownProcess[];
  /** Bytes of page data (all processes). */
  pagesBytes: number;
  /** Bytes of every file of the checkpoint. */
  diskBytes: number;
}

function hex(v: bigint | number): string { return '0x' + BigInt(v).toString(16); }

function protStr(p: number, shared: boolean): string {
  return (p & PROT.READ ? 'r' : '-') + (p & PROT.WRITE ? 'w' : '-') + (p & PROT.EXEC ? 'x' : '-') + (shared ? 's' : 'p');
}

const STATE_NAMES: Record<number, ShownProcess['state']> = {
  [TASK_STATE.ALIVE]: 'alive', [TASK_STATE.DEAD]: 'dead', [TASK_STATE.STOPPED]: 'stopped', [TASK_STATE.ZOMBIE]: 'zombie',
};

function backingOf(v: Msg<'vma_entry'>, files: ReadonlyMap<number, Msg<'file_entry'>>): string {
  const s = v.status;
  if (s & VMA.AREA_VDSO) return '[vdso]';
  if (s & VMA.AREA_VVAR) return '[vvar]';
  if (s & VMA.AREA_VSYSCALL) return '[vsyscall]';
  if (s & VMA.AREA_HEAP) return '[heap]';
  if (s & VMA.AREA_STACK) return '[stack]';
  if (s & VMA.ANON_SHARED) return 'anon shared';
  if (s & VMA.AREA_MEMFD) return `memfd ${files.get(Number(v.shmid))?.memfd?.inode_id ?? ''}`;
  if (s & (VMA.FILE_PRIVATE | VMA.FILE_SHARED)) return files.get(Number(v.shmid))?.reg?.name ?? `file #${v.shmid}`;
  return 'anon';
}

/** One line about what a file entry holds, by its kind. */
function describeFile(f: Msg<'file_entry'> | undefined, files: ReadonlyMap<number, Msg<'file_entry'>>, ghosts: ReadonlyMap<number, number>): string | undefined {
  if (!f) return undefined;
  const kind = fileUnitOfType(f.type)?.file;
  const member = (f as Record<string, unknown>)[kind?.field ?? ''];
  if (!kind?.describe || !member) return undefined;
  return kind.describe(member, files) + (ghosts.has(f.id) ? ' (deleted)' : '');
}

/** Everything `show` prints, typed. */
export function readCheckpoint(dir: string): ShownCheckpoint {
  const ckpt = loadCheckpoint(dir, { anyOwner: true });
  const { files, fdinfo } = ckpt.loaded(filesUnit);
  const mms = ckpt.loaded(memoryUnit);
  const { ghosts } = ckpt.loaded(regFileUnit);
  let pagesBytes = 0;
  const processes = ckpt.processes.map((p): ShownProcess => {
    const m = mms.get(p.pid)!;
    pagesBytes += m.pagemap.reduce((a, r) => a + r.nrPages * PAGE_SIZE, 0);
    const vmas = (m.mm.vmas ?? []).map((v) => {
      let pages = 0;
      for (const r of m.pagemap) {
        const end = r.vaddr + BigInt(r.nrPages * PAGE_SIZE);
        const lo = r.vaddr > v.start ? r.vaddr : v.start, hi = end < v.end ? end : v.end;
        if (hi > lo) pages += Number((hi - lo) / BigInt(PAGE_SIZE));
      }
      return { start: hex(v.start), end: hex(v.end), prot: protStr(v.prot, (v.flags & MAP.SHARED) !== 0), backing: backingOf(v, files), pages };
    });
    const fds = (fdinfo.get(p.pid) ?? []).map((fi) => {
      const f = files.get(fi.id);
      const member = f ? memberOf(f) : undefined;
      return {
        fd: fi.fd, type: FD_TYPE_NAMES[fi.type] ?? String(fi.type), path: describeFile(f, files, ghosts),
        flags: member?.flags ?? 0, pos: member?.pos !== undefined ? String(member.pos) : undefined, cloexec: (fi.flags & FDINFO_CLOEXEC) !== 0,
      };
    });
    const tc = p.threads[0].core.tc!;
    return {
      pid: p.pid, ppid: p.ppid, pgid: p.pgid, sid: p.sid, threads: p.threads.map((t) => t.tid), comm: tc.comm,
      state: STATE_NAMES[tc.task_state] ?? 'unknown',
      regs: p.threads.map(({ tid, core }) => {
        const g = core.thread_info!.gpregs;
        return { tid, ip: hex(g.ip), sp: hex(g.sp), ax: hex(g.ax), orig_ax: hex(g.orig_ax), fs_base: hex(g.fs_base) };
      }),
      vmas, fds,
      mm: { brk: hex(m.mm.mm_brk), start_brk: hex(m.mm.mm_start_brk), start_stack: hex(m.mm.mm_start_stack), exe: files.get(m.mm.exe_file_id)?.reg?.name },
    };
  });
  const diskBytes = fs.readdirSync(dir).reduce((a, f) => {
    try { return a + fs.statSync(path.join(dir, f)).size; } catch { return a; }
  }, 0);
  return { dir, imgVersion: ckpt.inventory.img_version, processes, pagesBytes, diskBytes };
}

export function formatShow(d: ShownCheckpoint): string {
  const out: string[] = [];
  out.push(`checkpoint ${d.dir}: ${d.processes.length} process(es), ${(d.pagesBytes / 1048576).toFixed(1)} MiB of pages, ${(d.diskBytes / 1048576).toFixed(1)} MiB on disk`);
  for (const p of d.processes) {
    out.push('', `process ${p.pid} (${p.comm}) ppid ${p.ppid} pgid ${p.pgid} sid ${p.sid}, ${p.state}, threads ${p.threads.join(' ')}`);
    out.push(`  exe ${p.mm.exe ?? '?'}  brk ${p.mm.start_brk}..${p.mm.brk}  stack ${p.mm.start_stack}`);
    for (const r of p.regs) out.push(`  thread ${r.tid}: ip ${r.ip} sp ${r.sp} ax ${r.ax} orig_ax ${r.orig_ax} fs_base ${r.fs_base}`);
    out.push('  memory:');
    for (const v of p.vmas) out.push(`    ${v.start.padStart(14)}-${v.end.padEnd(14)} ${v.prot} ${String(v.pages).padStart(7)} pages  ${v.backing}`);
    out.push('  files:');
    for (const f of p.fds) out.push(`    ${String(f.fd).padStart(4)} ${f.type.padEnd(5)} ${f.path ?? ''}${f.pos !== undefined ? ` pos ${f.pos}` : ''} flags 0${f.flags.toString(8)}${f.cloexec ? ' cloexec' : ''}`);
  }
  return out.join('\n');
}
