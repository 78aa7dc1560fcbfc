// The restore options criu uses to put a tree somewhere else than it was
// (inherit_fd: the caller's fds in place of files of the tree; cg_root:
// other cgroups; ext_mnt is mapped onto --external, see options.ts). stasis
// puts these back where they were. So each entry is checked against the images:
// one that names nothing there changes nothing (criu ignores those too);
// one that asks for where the tree was anyway is honoured by construction;
// anything else is refused, naming the entry, before anything is created.
import * as fs from 'node:fs';
import { ImageReader } from '../images/image';
import type { Msg } from '../images/schema';
import { FD_TYPES } from '../images/criu';
import { optionError, type CriuOpts } from './options';

/** What in the images a criu inherit_fd key names (pipe:[ino], socket:[ino], a path). */
function filesNamed(key: string, files: Msg<'file_entry'>[]): Msg<'file_entry'>[] {
  const ino = /^(pipe|socket):\[(\d+)\]$/.exec(key);
  if (ino) {
    const n = Number(ino[2]);
    return files.filter((f) => (ino[1] === 'pipe' ? (f.type === FD_TYPES.PIPE && f.pipe?.pipe_id === n) || (f.type === FD_TYPES.FIFO && f.fifo?.pipe_id === n)
      : (f.usk?.ino === n || f.isk?.ino === n)));
  }
  return files.filter((f) => f.reg && (f.reg.name === key || f.reg.name === `/${key}`));
}

/** inherit_fd: a caller's fd given to the tree in place of one of its files. */
function checkInheritFds(o: CriuOpts, images: ImageReader, notes: string[]): void {
  if (!o.inherit_fd?.length) return;
  const files = images.exists('files.img') ? images.read('files.img', 'FILES', 'file_entry') : [];
  for (const { key, fd } of o.inherit_fd) {
    try { fs.fstatSync(fd); } catch { throw optionError('inherit_fd', `${key} → fd ${fd}: fd ${fd} is not open in the restorer`); }
    if (filesNamed(key, files).length) {
      throw optionError('inherit_fd', `${key} → fd ${fd}: the tree has that file; giving it one of the caller's fds instead is not supported`);
    }
    notes.push(`inherit_fd ${key}: names no file in the images (unused)`);
  }
}

/** cg_root: the cgroup the tree's root is restored under, per controller. */
function checkCgroupRoots(o: CriuOpts, images: ImageReader, notes: string[]): void {
  if (!o.cg_root?.length) return;
  if (!images.exists('cgroup.img')) {
    // Dumped in the dumper's cgroups: born in ours, which the caller chose (runc moves us there).
    notes.push('cg_root: the images hold no cgroups; the tree is born in the restorer\'s');
    return;
  }
  const root = images.read('pstree.img', 'PSTREE', 'pstree_entry')[0];
  const set = images.one(`core-${root.pid}.img`, 'CORE', 'core_entry').thread_core?.cg_set;
  if (set === undefined || set === 1) {
    // Set 1 is the dumper's: the root is born in the restorer's cgroups, which the caller chose.
    notes.push('cg_root: the root was in the dumper\'s cgroups; it is born in the restorer\'s');
    return;
  }
  const members = (images.one('cgroup.img', 'CGROUP', 'cgroup_entry').sets ?? []).find((s) => s.id === set)?.ctls ?? [];
  for (const { ctrl, path } of o.cg_root) {
    const name = ctrl ?? '';
    const m = members.find((x) => x.name === name || (name !== '' && x.name.split(',').includes(name)));
    if (!m) { notes.push(`cg_root ${name}: no such hierarchy in the images (unused)`); continue; }
    if (m.path !== path) throw optionError('cg_root', `${name || 'cgroup2'}:${path}: the tree was in ${m.path}; restoring it into another cgroup is not supported`);
  }
}

/** Check inherit_fd and cg_root against the checkpoint in `dir`; the notes go to the log. */
export function checkRestoreOptions(o: CriuOpts, dir: string): string[] {
  const images = new ImageReader(dir);
  const notes: string[] = [];
  if (!images.exists('pstree.img')) return notes; // the restore itself says what is missing
  checkInheritFds(o, images, notes);
  checkCgroupRoots(o, images, notes);
  return notes;
}
