// memfd: as an fd (memfd_file_entry: flags, offset) and as a mapping. The
// file's contents are dumped once per inode (memfd.img: name, size, seals;
// contents as shmem pages in pagemap-shmem-INO.img + pages-N.img, offsets as
// addresses) and the memfd is re-created once, then re-opened for each user
// through /proc/self/fd so every open file description has its own offset.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { sysTry, abi } from '../sys';
import { writeImage, readImage, IMAGE_MODE, type Entry, type Decoded } from '../images/image';
import { StasisError, ErrorCodes } from '../errors';
import type { DumpCtx } from '../dump/context';
import type { RestoreCtx, TaskRestore } from '../restore/context';
import { FD_TYPES } from './fdtypes';
import { NO_FOWN, type FileKind } from './filekind';
import { park, fetchFd } from './fdutil';

const { O, PAGE_SIZE } = abi;
const F_ADD_SEALS = 1033, F_GET_SEALS = 1034;
const MFD_CLOEXEC = 1, MFD_ALLOW_SEALING = 2;
const ZERO = Buffer.alloc(PAGE_SIZE);

export function memfdName(link: string): string {
  return link.replace(/^\/memfd:/, '').replace(/ \(deleted\)$/, '');
}

/** Dump the memfd's inode once: `via` is a path that opens it (/proc/PID/fd/N or map_files). */
export function dumpMemfdInode(ctx: DumpCtx, ino: number, link: string, via: string): void {
  if (ctx.memfdInodes.some((m) => m.inode_id === BigInt(ino))) return;
  const fd = fs.openSync(via, 'r');
  let seals = 0;
  let data: Buffer;
  let st: fs.Stats;
  try {
    st = fs.fstatSync(fd);
    seals = Math.max(0, sysTry('fcntl', fd, F_GET_SEALS));
    data = Buffer.alloc(st.size);
    let got = 0;
    while (got < st.size) {
      const n = fs.readSync(fd, data, got, st.size - got, got);
      if (n <= 0) break;
      got += n;
    }
  } finally {
    fs.closeSync(fd);
  }
  const pagesId = ctx.allocPagesId();
  const entries: ['pagemap_head' | 'pagemap_entry', Entry][] = [['pagemap_head', { pages_id: pagesId }]];
  const out = fs.openSync(path.join(ctx.opts.dir, `pages-${pagesId}.img`), 'w', IMAGE_MODE);
  try {
    for (let off = 0; off < data.length; off += PAGE_SIZE) {
      const page = Buffer.alloc(PAGE_SIZE);
      data.copy(page, 0, off, Math.min(off + PAGE_SIZE, data.length));
      if (page.equals(ZERO)) continue;
      fs.writeSync(out, page);
      const last = entries[entries.length - 1][1];
      const lastEnd = entries.length > 1 ? Number(last.vaddr) + (last.nr_pages as number) * PAGE_SIZE : -1;
      if (lastEnd === off) last.nr_pages = (last.nr_pages as number) + 1;
      else entries.push(['pagemap_entry', { vaddr: BigInt(off), nr_pages: 1, flags: 4 /* PE_PRESENT */ }]);
    }
  } finally {
    fs.closeSync(out);
  }
  writeImage(ctx.opts.dir, `pagemap-shmem-${ino}.img`, 'PAGEMAP', entries);
  ctx.memfdInodes.push({ name: memfdName(link), uid: st.uid, gid: st.gid, size: BigInt(st.size), shmid: ino, seals, inode_id: BigInt(ino) });
}

export function writeMemfdImage(ctx: DumpCtx): void {
  if (ctx.memfdInodes.length) writeImage(ctx.opts.dir, 'memfd.img', 'MEMFD_INODE', ctx.memfdInodes.map((m) => ['memfd_inode_entry', m]));
}

/** A file entry (for mappings) naming the memfd inode, opened `flags`. */
export function memfdFileId(ctx: DumpCtx, ino: number, flags: number): number {
  return ctx.fileId(`memfd:${ino}:${flags}`, (id) => ({ type: FD_TYPES.MEMFD, id, memfd: { id, flags, pos: 0n, fown: NO_FOWN, inode_id: ino } }));
}

/** The memfd inodes of a checkpoint, by inode id (restore). */
export function loadMemfds(dir: string): Map<number, Decoded> {
  const out = new Map<number, Decoded>();
  if (!fs.existsSync(path.join(dir, 'memfd.img'))) return out;
  for (const m of readImage(dir, 'memfd.img', 'MEMFD_INODE', ['memfd_inode_entry'])) out.set(Number(m.inode_id), m);
  return out;
}

/** Create the memfd with its contents and seals, once; parked in its creator. */
function createMemfd(ctx: RestoreCtx, tr: TaskRestore, m: Decoded): { pid: number; fd: number } {
  const t = tr.task;
  const fd = park(ctx, tr, Number(t.call('memfd_create', t.putString(String(m.name).slice(0, 249)), MFD_CLOEXEC | MFD_ALLOW_SEALING)));
  t.call('ftruncate', fd, BigInt(m.size));
  const pm = readImage(ctx.ckpt.dir, `pagemap-shmem-${m.shmid}.img`, 'PAGEMAP', ['pagemap_head', 'pagemap_entry']);
  if (pm.length > 1) {
    const pages = fs.readFileSync(path.join(ctx.ckpt.dir, `pages-${pm[0].pages_id}.img`));
    const w = fs.openSync(`/proc/${tr.img.pid}/fd/${fd}`, 'r+');
    try {
      let off = 0;
      for (const e of pm.slice(1)) {
        const len = e.nr_pages * PAGE_SIZE;
        if (off + len > pages.length) throw new StasisError(ErrorCodes.BAD_IMAGE, `memfd ${m.name}: pages file too short`);
        // The last page may run past the file's size: write only what fits.
        const end = Math.min(Number(e.vaddr) + len, Number(m.size));
        fs.writeSync(w, pages, off, end - Number(e.vaddr), Number(e.vaddr));
        off += len;
      }
    } finally {
      fs.closeSync(w);
    }
  }
  if (m.seals) t.call('fcntl', fd, F_ADD_SEALS, m.seals);
  const have = { pid: tr.img.pid, fd };
  ctx.memfds.set(Number(m.inode_id), have);
  return have;
}

export const memfdKind: FileKind = {
  name: 'memfd',
  type: FD_TYPES.MEMFD,
  field: 'memfd',
  match: (d) => d.st.isFile() && d.link.startsWith('/memfd:'),
  dump(ctx, d, id) {
    dumpMemfdInode(ctx, d.st.ino, d.link, `/proc/${d.pid}/fd/${d.fd}`);
    return { id, flags: d.flags, pos: d.info.pos, fown: NO_FOWN, inode_id: d.st.ino };
  },
  open(ctx, tr, e) {
    const t = tr.task;
    const m = ctx.ckpt.memfds.get(Number(e.inode_id));
    if (!m) throw new StasisError(ErrorCodes.BAD_IMAGE, `memfd inode ${e.inode_id} absent from memfd.img`);
    const canon = ctx.memfds.get(Number(e.inode_id)) ?? createMemfd(ctx, tr, m);
    const local = canon.pid === tr.img.pid ? canon.fd : fetchFd(t, canon.pid, canon.fd);
    try {
      // A new open file description on the same memfd: its own offset and flags.
      const fd = t.open(`/proc/self/fd/${local}`, (e.flags as number) & ~(O.CREAT | O.EXCL | O.TRUNC));
      t.call('lseek', fd, BigInt(e.pos), 0);
      return fd;
    } finally {
      if (local !== canon.fd) t.call('close', local);
    }
  },
};
