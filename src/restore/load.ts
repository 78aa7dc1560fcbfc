// Load a checkpoint and check it whole before anything is created: every
// image's magic and framing, the tree, VMAs (aligned, ordered, disjoint),
// pagemaps (inside VMAs and inside pages-N.img), fds of known types, and the
// files that mappings and fds name (present, same size).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { readImage, type Decoded } from '../images/image';
import { StasisError, ErrorCodes } from '../errors';
import { VMA, PE } from '../resources/memory';
import { FD_TYPES, FD_TYPE_NAMES } from '../resources/fdtypes';
import { kindOfType } from '../resources/registry';
import { checkRegFile } from '../resources/regfile';
import { loadMemfds } from '../resources/memfd';
import { IMG_VERSION } from '../dump/dump';
import { abi } from '../sys';

const PAGE = BigInt(abi.PAGE_SIZE);

export interface ThreadImage { tid: number; core: Decoded }

export interface ProcessImage {
  pid: number; ppid: number; pgid: number; sid: number;
  threads: ThreadImage[];
  ids: Decoded;
  mm: Decoded;
  pagesId: number;
  /** pagemap entries (vaddr, nr_pages, flags) in file order. */
  pagemap: { vaddr: bigint; nrPages: number; flags: number }[];
  pagesFile: string;
  fdinfo: Decoded[];
  fs: Decoded;
}

export interface Checkpoint {
  dir: string;
  inventory: Decoded;
  /** Parents before children (pstree order). */
  processes: ProcessImage[];
  files: Map<number, Decoded>;
  /** Queued data of each pipe and FIFO, by pipe id. */
  pipeData: Map<number, { data: Buffer; size?: number }>;
  fifoData: Map<number, { data: Buffer; size?: number }>;
  /** memfd inodes, by inode id. */
  memfds: Map<number, Decoded>;
  /** Queued data of sockets, by file id, oldest first. */
  skQueues: Map<number, { data: Buffer; addr?: Buffer }[]>;
}

function bad(file: string, msg: string): StasisError {
  return new StasisError(ErrorCodes.BAD_IMAGE, `${file}: ${msg}`);
}

export interface LoadOptions {
  /** Do not refuse files whose size changed since the dump. */
  skipFileCheck?: boolean;
  /** Terminal fds are allowed (they get stasis's terminal). */
  shellJob?: boolean;
}

export function loadCheckpoint(dir: string, opts: LoadOptions = {}): Checkpoint {
  if (!fs.existsSync(dir)) throw new StasisError(ErrorCodes.BAD_IMAGE, `${dir}: no such directory`);
  const p = (f: string) => path.join(dir, f);
  if (!fs.existsSync(p('inventory.img'))) throw bad(p('inventory.img'), 'missing: not a complete checkpoint');
  const [inventory] = readImage(dir, 'inventory.img', 'INVENTORY', ['inventory_entry']);
  if (!inventory || inventory.img_version !== IMG_VERSION) throw bad(p('inventory.img'), `unsupported image version ${inventory?.img_version}`);
  const tree = readImage(dir, 'pstree.img', 'PSTREE', ['pstree_entry']);
  if (tree.length === 0) throw bad(p('pstree.img'), 'no processes');
  const fileList = readImage(dir, 'files.img', 'FILES', ['file_entry']);
  const files = new Map<number, Decoded>();
  for (const f of fileList) {
    if (files.has(f.id)) throw bad(p('files.img'), `duplicate file id ${f.id}`);
    const kind = kindOfType(f.type);
    if (!kind || !f[kind.field]) throw bad(p('files.img'), `file id ${f.id}: unsupported file type ${FD_TYPE_NAMES[f.type] ?? f.type}`);
    if (f.type === FD_TYPES.TTY && !opts.shellJob) throw new StasisError(ErrorCodes.USAGE, `${dir} holds a shell job on a terminal (${f.tty.regf_id ? 'file ' + f.tty.regf_id : 'tty'}): restore with -j/--shell-job`);
    files.set(f.id, f);
  }
  // Deleted files: their entries name a ghost image holding the contents.
  if (fs.existsSync(p('remap-fpath.img'))) {
    for (const r of readImage(dir, 'remap-fpath.img', 'REMAP_FPATH', ['remap_file_path_entry'])) {
      const f = files.get(r.orig_id);
      if (!f?.reg) throw bad(p('remap-fpath.img'), `remaps file id ${r.orig_id}, not a regular file of files.img`);
      if ((r.remap_type ?? 0) !== 1) throw bad(p('remap-fpath.img'), `file id ${r.orig_id}: remap type ${r.remap_type} is not supported`);
      if (!fs.existsSync(p(`ghost-file-${r.remap_id}.img`))) throw bad(p(`ghost-file-${r.remap_id}.img`), 'missing');
      f.reg.ghostId = r.remap_id;
    }
  }
  const processes: ProcessImage[] = [];
  const seenPids = new Set<number>();
  for (const t of tree) {
    const pid = t.pid as number;
    if (seenPids.has(pid)) throw bad(p('pstree.img'), `pid ${pid} appears twice`);
    seenPids.add(pid);
    const tids: number[] = t.threads?.length ? t.threads : [pid];
    if (tids[0] !== pid && !tids.includes(pid)) throw bad(p('pstree.img'), `pid ${pid}: leader missing from its threads`);
    const threads = tids.map((tid) => {
      const [core] = readImage(dir, `core-${tid}.img`, 'CORE', ['core_entry']);
      if (!core?.thread_info?.gpregs || !core.thread_info.fpregs) throw bad(p(`core-${tid}.img`), 'no x86-64 registers');
      if (core.mtype !== 1) throw bad(p(`core-${tid}.img`), `architecture ${core.mtype} is not x86-64`);
      if (tid === pid && !core.tc) throw bad(p(`core-${tid}.img`), 'leader core has no task state');
      return { tid, core };
    });
    const [ids] = readImage(dir, `ids-${pid}.img`, 'IDS', ['task_kobj_ids_entry']);
    if (!ids) throw bad(p(`ids-${pid}.img`), 'empty');
    const [mm] = readImage(dir, `mm-${pid}.img`, 'MM', ['mm_entry']);
    if (!mm) throw bad(p(`mm-${pid}.img`), 'empty');
    checkVmas(p(`mm-${pid}.img`), mm.vmas ?? [], files, opts);
    const pm = readImage(dir, `pagemap-${pid}.img`, 'PAGEMAP', ['pagemap_head', 'pagemap_entry']);
    if (pm.length === 0) throw bad(p(`pagemap-${pid}.img`), 'no header');
    const pagesId = pm[0].pages_id as number;
    const pagesFile = `pages-${pagesId}.img`;
    const pagemap = pm.slice(1).map((e) => ({ vaddr: e.vaddr as bigint, nrPages: e.nr_pages as number, flags: (e.flags ?? PE.PRESENT) as number }));
    checkPagemap(p(`pagemap-${pid}.img`), p(pagesFile), pagemap, mm.vmas ?? []);
    const fdinfo = readImage(dir, `fdinfo-${ids.files_id}.img`, 'FDINFO', ['fdinfo_entry']);
    for (const fd of fdinfo) {
      const f = files.get(fd.id);
      if (!f) throw bad(p(`fdinfo-${ids.files_id}.img`), `fd ${fd.fd} names file id ${fd.id}, absent from files.img`);
      if (fd.type !== f.type) throw bad(p(`fdinfo-${ids.files_id}.img`), `fd ${fd.fd}: type ${FD_TYPE_NAMES[fd.type] ?? fd.type} but file id ${fd.id} is ${FD_TYPE_NAMES[f.type]}`);
      const kind = kindOfType(f.type)!;
      kind.check?.(f[kind.field], `${p('files.img')}: fd ${fd.fd}`, opts.skipFileCheck ?? false);
    }
    const [fsEntry] = readImage(dir, `fs-${pid}.img`, 'FS', ['fs_entry']);
    if (!fsEntry) throw bad(p(`fs-${pid}.img`), 'empty');
    for (const id of [fsEntry.cwd_id, fsEntry.root_id]) if (!files.has(id)) throw bad(p(`fs-${pid}.img`), `names file id ${id}, absent from files.img`);
    if (mm.exe_file_id && !files.has(mm.exe_file_id)) throw bad(p(`mm-${pid}.img`), `exe file id ${mm.exe_file_id} absent from files.img`);
    processes.push({ pid, ppid: t.ppid, pgid: t.pgid, sid: t.sid, threads, ids, mm, pagesId, pagemap, pagesFile, fdinfo, fs: fsEntry });
  }
  checkTree(p('pstree.img'), processes);
  const readData = (file: string, kind: 'PIPES_DATA' | 'FIFO_DATA') => {
    const m = new Map<number, { data: Buffer; size?: number }>();
    if (fs.existsSync(p(file))) for (const e of readImage(dir, file, kind, ['pipe_data_entry'], (d) => d.bytes)) m.set(e.pipe_id, { data: e.extra, size: e.size });
    return m;
  };
  const pipeData = readData('pipes-data.img', 'PIPES_DATA');
  const fifoData = readData('fifo-data.img', 'FIFO_DATA');
  const skQueues = new Map<number, { data: Buffer; addr?: Buffer }[]>();
  if (fs.existsSync(p('sk-queues.img'))) {
    for (const e of readImage(dir, 'sk-queues.img', 'SK_QUEUES', ['sk_packet_entry'], (d) => d.length)) {
      if (!files.has(e.id_for)) throw bad(p('sk-queues.img'), `queued data for file id ${e.id_for}, absent from files.img`);
      const q = skQueues.get(e.id_for) ?? [];
      q.push({ data: e.extra, addr: e.addr?.length ? e.addr : undefined });
      skQueues.set(e.id_for, q);
    }
  }
  // Connected unix sockets are re-created as pairs: both ends must be there.
  const unixByIno = new Map([...files.values()].filter((f) => f.usk).map((f) => [f.usk.ino as number, f.usk]));
  for (const u of unixByIno.values()) {
    if (!u.peer) continue;
    const peer = unixByIno.get(u.peer);
    if (peer && peer.uflags & 1 /* USK_EXTERN */) continue;
    if (!peer || peer.peer !== u.ino) throw bad(p('files.img'), `unix socket ${u.ino} is connected to ${u.peer}, which is not its pair in this checkpoint; not supported`);
  }
  const memfds = loadMemfds(dir);
  for (const f of files.values()) {
    if (f.memfd && !memfds.has(Number(f.memfd.inode_id))) throw bad(p('files.img'), `memfd file id ${f.id}: inode ${f.memfd.inode_id} absent from memfd.img`);
  }
  return { dir, inventory, processes, files, pipeData, fifoData, skQueues, memfds };
}

/**
 * Parents before children; sessions we can re-create: a process either leads
 * its session or shares its parent's (the root may belong to a session
 * outside the tree: it then joins the restorer's, as criu --shell-job does).
 */
function checkTree(file: string, procs: ProcessImage[]): void {
  const byPid = new Map(procs.map((x) => [x.pid, x]));
  procs.forEach((x, i) => {
    if (i === 0) return;
    const parent = byPid.get(x.ppid);
    if (!parent || procs.indexOf(parent) > i) throw bad(file, `pid ${x.pid}: parent ${x.ppid} is not listed before it`);
    if (x.sid !== x.pid && x.sid !== parent.sid) throw bad(file, `pid ${x.pid}: session ${x.sid} is neither its own nor its parent's; not supported`);
    const leader = byPid.get(x.pgid);
    if (leader && leader.sid !== x.sid) throw bad(file, `pid ${x.pid}: process group ${x.pgid} lies in another session`);
    if (!leader && x.pgid !== parent.pgid) throw bad(file, `pid ${x.pid}: process group ${x.pgid} has no member in the tree to re-create it`);
  });
}

function checkFile(where: string, f: Decoded, opts: LoadOptions, user: string): void {
  if (f.type !== FD_TYPES.REG) throw bad(where, `${user}: file id ${f.id} is not a regular file`);
  checkRegFile(f.reg, `${where}: ${user}`, opts.skipFileCheck ?? false);
}

function checkVmas(file: string, vmas: Decoded[], files: Map<number, Decoded>, opts: LoadOptions): void {
  let prevEnd = 0n;
  for (const v of vmas) {
    const range = `VMA ${v.start.toString(16)}-${v.end.toString(16)}`;
    if (v.start % PAGE !== 0n || v.end % PAGE !== 0n) throw bad(file, `${range} is not page-aligned`);
    if (v.end <= v.start) throw bad(file, `${range} is empty or inverted`);
    if (v.start < prevEnd) throw bad(file, `${range} overlaps the previous VMA`);
    prevEnd = v.end;
    if (v.status & (VMA.FILE_PRIVATE | VMA.FILE_SHARED)) {
      const f = files.get(Number(v.shmid));
      if (!f) throw bad(file, `${range} maps file id ${v.shmid}, absent from files.img`);
      if (v.status & VMA.AREA_MEMFD) {
        if (f.type !== FD_TYPES.MEMFD) throw bad(file, `${range}: memfd mapping of file id ${v.shmid}, which is not a memfd`);
      } else {
        checkFile(file, f, opts, range);
      }
    } else if (v.status & (VMA.AREA_SYSVIPC | VMA.AREA_SOCKET | VMA.AREA_AIORING)) {
      throw bad(file, `${range}: unsupported mapping kind (status 0x${v.status.toString(16)})`);
    }
  }
}

function checkPagemap(file: string, pagesPath: string, entries: { vaddr: bigint; nrPages: number; flags: number }[], vmas: Decoded[]): void {
  let pages = 0;
  let vi = 0;
  for (const e of entries) {
    if (e.vaddr % PAGE !== 0n) throw bad(file, `entry at ${e.vaddr.toString(16)} is not page-aligned`);
    if (e.flags & (PE.PARENT | PE.LAZY)) throw bad(file, `entry at ${e.vaddr.toString(16)}: incremental/lazy pages are not supported`);
    const end = e.vaddr + BigInt(e.nrPages) * PAGE;
    // Entries are in address order: walk VMAs alongside.
    while (vi < vmas.length && vmas[vi].end <= e.vaddr) vi++;
    let covered = e.vaddr;
    for (let j = vi; j < vmas.length && vmas[j].start <= covered && covered < end; j++) covered = vmas[j].end;
    if (vi >= vmas.length || vmas[vi].start > e.vaddr || covered < end) {
      throw bad(file, `pages ${e.vaddr.toString(16)}-${end.toString(16)} lie outside every VMA`);
    }
    pages += e.nrPages;
  }
  let size = 0;
  try { size = fs.statSync(pagesPath).size; } catch {
    if (pages > 0) throw bad(pagesPath, 'missing');
  }
  if (size < pages * abi.PAGE_SIZE) throw bad(file, `names ${pages} pages but ${path.basename(pagesPath)} holds only ${Math.floor(size / abi.PAGE_SIZE)}`);
}
