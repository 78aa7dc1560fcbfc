// `stasis show DIR`: a readable summary of a checkpoint (or --json).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { readImage, type Decoded } from './images/image';
import { VMA } from './resources/memory';
import { FD_TYPE_NAMES } from './resources/fdtypes';

export interface ShowData {
  inventory: Decoded;
  processes: {
    pid: number; ppid: number; pgid: number; sid: number; threads: number[];
    comm: string; state: number;
    regs: Record<number, { ip: string; sp: string; ax: string; orig_ax: string; fs_base: string }>;
    vmas: { start: string; end: string; prot: string; backing: string; pages: number }[];
    fds: { fd: number; type: string; path?: string; flags: number; pos?: string; cloexec: boolean }[];
    mm: { brk: string; start_brk: string; start_stack: string; exe?: string };
  }[];
  pagesBytes: number;
}

function hex(v: bigint | number): string { return '0x' + BigInt(v).toString(16); }

function protStr(p: number, shared: boolean): string {
  return (p & 1 ? 'r' : '-') + (p & 2 ? 'w' : '-') + (p & 4 ? 'x' : '-') + (shared ? 's' : 'p');
}

export function collectShow(dir: string): ShowData {
  const [inventory] = readImage(dir, 'inventory.img', 'INVENTORY', ['inventory_entry']);
  const tree = readImage(dir, 'pstree.img', 'PSTREE', ['pstree_entry']);
  const files = readImage(dir, 'files.img', 'FILES', ['file_entry']);
  const fileById = new Map(files.map((f) => [f.id as number, f]));
  let pagesBytes = 0;
  const processes = tree.map((t) => {
    const pid = t.pid as number;
    const threads = (t.threads as number[]) ?? [pid];
    const regs: ShowData['processes'][0]['regs'] = {};
    let comm = '', state = 0;
    for (const tid of threads) {
      const [core] = readImage(dir, `core-${tid}.img`, 'CORE', ['core_entry']);
      const g = core.thread_info.gpregs;
      regs[tid] = { ip: hex(g.ip), sp: hex(g.sp), ax: hex(g.ax), orig_ax: hex(g.orig_ax), fs_base: hex(g.fs_base) };
      if (core.tc) { comm = core.tc.comm; state = core.tc.task_state; }
    }
    const [ids] = readImage(dir, `ids-${pid}.img`, 'IDS', ['task_kobj_ids_entry']);
    const [mm] = readImage(dir, `mm-${pid}.img`, 'MM', ['mm_entry']);
    const pm = readImage(dir, `pagemap-${pid}.img`, 'PAGEMAP', ['pagemap_head', 'pagemap_entry']);
    const ranges = pm.slice(1).map((e) => ({ start: e.vaddr as bigint, pages: e.nr_pages as number }));
    pagesBytes += ranges.reduce((a, r) => a + r.pages * 4096, 0);
    const vmas = (mm.vmas as Decoded[]).map((v) => {
      const s = v.status as number;
      let backing = 'anon';
      if (s & VMA.AREA_VDSO) backing = '[vdso]';
      else if (s & VMA.AREA_VVAR) backing = '[vvar]';
      else if (s & VMA.AREA_VSYSCALL) backing = '[vsyscall]';
      else if (s & VMA.AREA_HEAP) backing = '[heap]';
      else if (s & VMA.AREA_STACK) backing = '[stack]';
      else if (s & VMA.ANON_SHARED) backing = 'anon shared';
      else if (s & (VMA.FILE_PRIVATE | VMA.FILE_SHARED)) backing = fileById.get(Number(v.shmid))?.reg?.name ?? `file #${v.shmid}`;
      let pages = 0;
      for (const r of ranges) {
        const end = r.start + BigInt(r.pages * 4096);
        const lo: bigint = r.start > v.start ? r.start : v.start, hi: bigint = end < v.end ? end : v.end;
        if (hi > lo) pages += Number((BigInt(hi) - BigInt(lo)) / 4096n);
      }
      return { start: hex(v.start), end: hex(v.end), prot: protStr(v.prot, (v.flags & 1) !== 0), backing, pages };
    });
    const fdinfo = readImage(dir, `fdinfo-${ids.files_id}.img`, 'FDINFO', ['fdinfo_entry']);
    const fds = fdinfo.map((f) => {
      const file = fileById.get(f.id);
      const member = file ? Object.values(file).find((v) => v && typeof v === 'object' && 'id' in v) as Decoded | undefined : undefined;
      return {
        fd: f.fd as number, type: FD_TYPE_NAMES[f.type] ?? String(f.type), path: describeFile(file, fileById),
        flags: member?.flags ?? 0, pos: member?.pos !== undefined ? String(member.pos) : undefined, cloexec: (f.flags & 1) !== 0,
      };
    });
    return {
      pid, ppid: t.ppid, pgid: t.pgid, sid: t.sid, threads, comm, state, regs, vmas, fds,
      mm: { brk: hex(mm.mm_brk), start_brk: hex(mm.mm_start_brk), start_stack: hex(mm.mm_start_stack), exe: fileById.get(mm.exe_file_id)?.reg?.name },
    };
  });
  return { inventory, processes, pagesBytes };
}

function inetAddr(family: number, words: number[] | undefined, port: number): string {
  const b = Buffer.alloc((words ?? []).length * 4);
  (words ?? []).forEach((w, i) => b.writeUInt32LE(w >>> 0, i * 4));
  const host = family === 2 ? [...b].join('.') : `[${(b.toString('hex').match(/.{4}/g) ?? []).join(':')}]`;
  return `${host}:${port}`;
}

/** One line about what an fd holds. */
function describeFile(file: Decoded | undefined, byId: Map<number, Decoded>): string | undefined {
  if (!file) return undefined;
  if (file.reg) return file.reg.name + (file.reg.ghostId !== undefined ? ' (deleted)' : '');
  if (file.pipe) return `pipe:[${file.pipe.pipe_id}]`;
  if (file.fifo) return `fifo ${byId.get(file.fifo.regf_id)?.reg?.name ?? ''}`;
  if (file.efd) return `eventfd count ${file.efd.counter}`;
  if (file.sgfd) return `signalfd mask 0x${BigInt(file.sgfd.sigmask).toString(16)}`;
  if (file.tfd) return `timerfd clock ${file.tfd.clockid} every ${file.tfd.isec}.${String(file.tfd.insec).padStart(9, '0')}s`;
  if (file.epfd) return `epoll on fds ${(file.epfd.tfd ?? []).map((t: Decoded) => t.tfd).join(',')}`;
  if (file.ify) return `inotify ${(file.ify.wd ?? []).map((w: Decoded) => w.f_handle?.path).join(', ')}`;
  if (file.memfd) return `memfd inode ${file.memfd.inode_id}`;
  if (file.tty) return `terminal ${byId.get(file.tty.regf_id)?.reg?.name ?? ''}`;
  if (file.isk) {
    const k = file.isk;
    const proto = k.proto === 6 ? 'tcp' : 'udp';
    const state = k.state === 10 ? ' listening' : k.state === 1 ? ` → ${inetAddr(k.family, k.dst_addr, k.dst_port)}` : '';
    return `${proto} ${inetAddr(k.family, k.src_addr, k.src_port)}${state}`;
  }
  if (file.usk) {
    const n = Buffer.from(file.usk.name ?? []);
    const name = n.length ? (n[0] === 0 ? '@' + n.subarray(1).toString() : n.toString()) : '';
    return `unix ${name}${file.usk.state === 10 ? ' listening' : file.usk.peer ? ` peer ${file.usk.peer}` : ''}`;
  }
  return undefined;
}

const STATE_NAMES: Record<number, string> = { 1: 'alive', 2: 'dead', 3: 'stopped', 6: 'zombie' };

export function formatShow(dir: string, d: ShowData): string {
  const out: string[] = [];
  const size = fs.readdirSync(dir).filter((f) => f.endsWith('.img')).reduce((a, f) => a + fs.statSync(path.join(dir, f)).size, 0);
  out.push(`checkpoint ${dir}: ${d.processes.length} process(es), ${(d.pagesBytes / 1048576).toFixed(1)} MiB of pages, ${(size / 1048576).toFixed(1)} MiB on disk`);
  for (const p of d.processes) {
    out.push('', `process ${p.pid} (${p.comm}) ppid ${p.ppid} pgid ${p.pgid} sid ${p.sid}, ${STATE_NAMES[p.state] ?? p.state}, threads ${p.threads.join(' ')}`);
    out.push(`  exe ${p.mm.exe ?? '?'}  brk ${p.mm.start_brk}..${p.mm.brk}  stack ${p.mm.start_stack}`);
    for (const [tid, r] of Object.entries(p.regs)) out.push(`  thread ${tid}: ip ${r.ip} sp ${r.sp} ax ${r.ax} orig_ax ${r.orig_ax} fs_base ${r.fs_base}`);
    out.push('  memory:');
    for (const v of p.vmas) out.push(`    ${v.start.padStart(14)}-${v.end.padEnd(14)} ${v.prot} ${String(v.pages).padStart(7)} pages  ${v.backing}`);
    out.push('  files:');
    for (const f of p.fds) out.push(`    ${String(f.fd).padStart(4)} ${f.type.padEnd(5)} ${f.path ?? ''}${f.pos !== undefined ? ` pos ${f.pos}` : ''} flags 0${f.flags.toString(8)}${f.cloexec ? ' cloexec' : ''}`);
  }
  return out.join('\n');
}
