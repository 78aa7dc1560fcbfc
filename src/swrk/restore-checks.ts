// inherit_fd, the restore option criu uses to give the tree some of the
// caller's fds in place of its files (runc and podman: the container's new
// stdio pipes). Each entry is checked against the images: one that names
// nothing there changes nothing (criu ignores those too); a pipe is handed
// over; any other file is refused, naming the entry, before anything is
// created.
import * as fs from 'node:fs';
import { ImageReader } from '../images/image';
import type { Msg } from '../images/schema';
import { FD_TYPES } from '../images/criu';
import { inheritKey } from '../resources/files';
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

/**
 * inherit_fd: a caller's fd given to the tree in place of one of its files
 * or external namespaces, as stasis's --inherit-fd fd[N]:KEY. Pipes (a
 * container's stdio: runc and podman hand over the new ones) are handed over;
 * any other file named is refused; a key naming no file goes on as it is (an
 * external namespace's, e.g. podman's extRootNetNS, or unused, as criu).
 */
function inheritFds(o: CriuOpts, images: ImageReader, notes: string[]): string[] {
  const out: string[] = [];
  const files = o.inherit_fd?.length && images.exists('files.img') ? images.read('files.img', 'FILES', 'file_entry') : [];
  for (const { key, fd } of o.inherit_fd ?? []) {
    try { fs.fstatSync(fd); } catch { throw optionError('inherit_fd', `${key} → fd ${fd}: fd ${fd} is not open in the restorer`); }
    const named = filesNamed(key, files);
    if (named.length && !named.every((f) => inheritKey(f) === key)) {
      throw optionError('inherit_fd', `${key} → fd ${fd}: the tree has that file; giving it one of the caller's fds instead is supported for pipes only`);
    }
    notes.push(named.length ? `inherit_fd ${key}: our fd ${fd} in its place` : `inherit_fd ${key}: names no file in the images (an external namespace's key, or unused)`);
    out.push(`fd[${fd}]:${key}`);
  }
  return out;
}

/** Check inherit_fd against the checkpoint in `dir`: stasis's --inherit-fd forms, and notes for the log. */
export function checkRestoreOptions(o: CriuOpts, dir: string): { notes: string[]; inheritFd: string[] } {
  const images = new ImageReader(dir);
  const notes: string[] = [];
  if (!images.exists('pstree.img')) return { notes, inheritFd: [] }; // the restore itself says what is missing
  return { notes, inheritFd: inheritFds(o, images, notes) };
}
