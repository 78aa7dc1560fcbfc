// memfd: as an fd (memfd_file_entry: flags, offset) and as a mapping. The
// file's contents are dumped once per inode (memfd.img: name, size, seals;
// contents as shmem pages in pagemap-shmem-INO.img + pages-N.img, offsets as
// addresses) and the memfd is re-created once, then re-opened for each user
// through /proc/self/fd so every open file description has its own offset.
import * as fs from 'node:fs';
import { sysTry, abi } from '../sys';
import { cstr } from '../compel/remote';
import { parts, ioError, type Msg } from '../images/image';
import { FD_TYPES, NO_FOWN, PE } from '../images/criu';
import { StasisError, ErrorCodes } from '../errors';
import { defineFileUnit } from '../unit/unit';
import type { DumpCtx } from '../unit/dump-ctx';
import type { RestoreCtx, TaskRestore } from '../unit/restore-ctx';
import { fileId, park, fetchFd, filesUnit } from './files';
import { pagemapPages } from '../images/pagemap';

const { O, F, MFD, PAGE_SIZE, SEEK } = abi;
const ZERO = Buffer.alloc(PAGE_SIZE);

type Inode = Msg<'memfd_inode_entry'>;
interface LoadedInode { inode: Inode; pages: { offset: number; len: number; fileOff: number }[]; pagesFile: string }

export function memfdName(link: string): string {
  return link.replace(/^\/memfd:/, '').replace(/ \(deleted\)$/, '');
}

/** Dump the memfd's inode once: `via` is a path that opens it (/proc/PID/fd/N or map_files). */
export function dumpMemfdInode(ctx: DumpCtx, ino: number, link: string, via: string): void {
  const st0 = ctx.state(memfdUnit);
  if (st0.some((m) => m.inode_id === BigInt(ino))) return;
  // Huge pages (MFD_HUGETLB): made again as a plain memfd it would be another kind of file.
  if (fs.statfsSync(via).type === abi.HUGETLBFS_MAGIC) throw new StasisError(ErrorCodes.UNSUPPORTED, `${link}: a memfd of huge pages (MFD_HUGETLB); not supported`);
  const fd = fs.openSync(via, 'r');
  let seals = 0;
  let data: Buffer;
  let st: fs.Stats;
  try {
    st = fs.fstatSync(fd);
    seals = Math.max(0, sysTry('fcntl', fd, F.GET_SEALS));
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
  const entries: Msg<'pagemap_entry'>[] = [];
  const out = ctx.out.create(`pages-${pagesId}.img`);
  try {
    for (let off = 0; off < data.length; off += PAGE_SIZE) {
      const page = Buffer.alloc(PAGE_SIZE);
      data.copy(page, 0, off, Math.min(off + PAGE_SIZE, data.length));
      if (page.equals(ZERO)) continue;
      out.write(page);
      const last = entries[entries.length - 1];
      if (last && Number(last.vaddr) + last.nr_pages * PAGE_SIZE === off) last.nr_pages++;
      else entries.push({ vaddr: BigInt(off), nr_pages: 1, flags: PE.PRESENT });
    }
  } finally {
    out.close();
  }
  ctx.write(`pagemap-shmem-${ino}.img`, 'PAGEMAP', [{ msg: 'pagemap_head', entry: { pages_id: pagesId } }, ...parts('pagemap_entry', entries)]);
  st0.push({ name: memfdName(link), uid: st.uid, gid: st.gid, size: BigInt(st.size), shmid: ino, seals, inode_id: BigInt(ino), mode: st.mode });
}

/** A file entry (for mappings) naming the memfd inode, opened `flags`. */
export function memfdFileId(ctx: DumpCtx, ino: number, flags: number): number {
  return fileId(ctx, `memfd:${ino}:${flags}`, (id) => ({ type: FD_TYPES.MEMFD, id, memfd: { id, flags, pos: 0n, fown: NO_FOWN, inode_id: ino } }));
}

/** Create the memfd with its contents and seals, once; parked in its creator. */
type Canon = { pid: number; fd: number; fdTaken?: boolean };

function createMemfd(ctx: RestoreCtx, tr: TaskRestore, m: LoadedInode, made: Map<number, Canon>): Canon {
  const t = tr.task;
  const fd = park(ctx, tr, t.callNum('memfd_create', cstr(m.inode.name.slice(0, 249)), MFD.CLOEXEC | MFD.ALLOW_SEALING));
  t.call('ftruncate', fd, m.inode.size);
  if (m.pages.length) {
    const pages = ctx.ckpt.images.raw(m.pagesFile);
    const w = fs.openSync(`/proc/${tr.task.pid}/fd/${fd}`, 'r+');
    try {
      for (const p of m.pages) {
        // The last page may run past the file's size: write only what fits.
        const end = Math.min(p.offset + p.len, Number(m.inode.size));
        if (end > p.offset) fs.writeSync(w, pages, p.fileOff, end - p.offset, p.offset);
      }
    } catch (e) {
      throw ioError(`memfd ${m.inode.name}`, 'write', e);
    } finally {
      fs.closeSync(w);
    }
  }
  // Owner and mode as they were (it was made with our credentials).
  const via = `/proc/${tr.task.pid}/fd/${fd}`;
  fs.chownSync(via, m.inode.uid, m.inode.gid);
  if (m.inode.mode !== undefined) fs.chmodSync(via, m.inode.mode & 0o7777);
  if (m.inode.seals) t.call('fcntl', fd, F.ADD_SEALS, m.inode.seals);
  const have = { pid: tr.img.pid, fd };
  made.set(Number(m.inode.inode_id), have);
  return have;
}

/**
 * An fd on the memfd of `e`, for an fd or (`mapping`) to be mapped. The file
 * memfd_create made is no writer to the kernel (exec of the memfd works
 * while it is open), an open of /proc/self/fd/N for writing is: so the first
 * read-write fd and every writable mapping get memfd_create's file; any
 * other fd is its own open file description, with its own offset and flags.
 */
export function openMemfd(ctx: RestoreCtx, tr: TaskRestore, e: Msg<'memfd_file_entry'>, mapping = false): number {
  const t = tr.task;
  const m = ctx.loaded(memfdUnit).get(e.inode_id)!;
  const made = ctx.state(memfdUnit);
  const canon = made.get(e.inode_id) ?? createMemfd(ctx, tr, m, made);
  const local = canon.pid === tr.img.pid ? t.callNum('dup', canon.fd) : fetchFd(t, canon.pid, canon.fd);
  if ((e.flags & O.ACCMODE) === O.RDWR && (mapping || !canon.fdTaken)) {
    if (mapping) return local;
    canon.fdTaken = true;
    t.call('fcntl', local, F.SETFL, e.flags & (O.APPEND | O.NONBLOCK | O.NOATIME | O.DIRECT));
    t.call('lseek', local, e.pos, SEEK.SET);
    return local;
  }
  try {
    const fd = t.open(`/proc/self/fd/${local}`, e.flags & ~(O.CREAT | O.EXCL | O.TRUNC));
    t.call('lseek', fd, e.pos, SEEK.SET);
    return fd;
  } finally {
    t.call('close', local);
  }
}

export const memfdUnit = defineFileUnit({
  name: 'memfd',
  dumpState: () => [] as Inode[],
  dumpPhases: [{
    name: 'memfd-inodes', after: ['files', 'memory'],
    once: (ctx, st) => { if (st.length) ctx.write('memfd.img', 'MEMFD_INODE', parts('memfd_inode_entry', st)); },
  }],
  loadAfter: ['files'],
  load(ld) {
    const out = new Map<number, LoadedInode>();
    if (ld.images.exists('memfd.img')) {
      for (const inode of ld.images.read('memfd.img', 'MEMFD_INODE', 'memfd_inode_entry')) {
        const pmFile = `pagemap-shmem-${inode.shmid}.img`;
        const pm = ld.images.withHead(pmFile, 'PAGEMAP', 'pagemap_head', 'pagemap_entry');
        const pagesFile = `pages-${pm.head.pages_id}.img`;
        let fileOff = 0;
        const pmPath = ld.images.path(pmFile);
        const pages = pm.entries.map((e) => {
          const p = { offset: Number(e.vaddr), len: pagemapPages(e, pmPath) * PAGE_SIZE, fileOff };
          fileOff += p.len;
          return p;
        });
        const size = ld.images.exists(pagesFile) ? ld.images.size(pagesFile) : 0;
        if (size < fileOff) throw new StasisError(ErrorCodes.BAD_IMAGE, `${ld.images.path(pmFile)}: names ${fileOff} bytes of pages but ${pagesFile} holds ${size}`);
        out.set(Number(inode.inode_id), { inode, pages, pagesFile });
      }
    }
    for (const f of ld.loaded(filesUnit).files.values()) {
      if (f.memfd && !out.has(f.memfd.inode_id)) throw new StasisError(ErrorCodes.BAD_IMAGE, `${ld.images.path('files.img')}: memfd file id ${f.id}: inode ${f.memfd.inode_id} absent from memfd.img`);
    }
    return out;
  },
  restoreState: () => new Map<number, Canon>(),
  file: {
    type: FD_TYPES.MEMFD,
    field: 'memfd',
    match: (d) => d.st.isFile() && d.link.startsWith('/memfd:'),
    dump(ctx, d, id) {
      dumpMemfdInode(ctx, d.st.ino, d.link, `/proc/${d.pid}/fd/${d.fd}`);
      return { id, flags: d.flags, pos: d.info.pos, fown: NO_FOWN, inode_id: d.st.ino };
    },
    open: (ctx, tr, e) => openMemfd(ctx, tr, e),
    describe: (e) => `memfd inode ${e.inode_id}`,
  },
});
