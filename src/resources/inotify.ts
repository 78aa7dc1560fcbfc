// inotify: the watches (wd, mask, and the watched inode as a file handle) from
// fdinfo. The handle is turned back into a path with open_by_handle_at on a
// mount of the same device; restore adds the watches again in wd order so
// they get the same wd numbers (a gap is filled by a watch added and removed).
import * as fs from 'node:fs';
import { sys, sysTry, addressOf } from '../sys';
import { StasisError, ErrorCodes } from '../errors';
import { FD_TYPES } from './fdtypes';
import { NO_FOWN, type FileKind } from './filekind';

const IN_NONBLOCK = 0o4000;
const O_PATH = 0o10000000, O_CLOEXEC = 0o2000000;
const SYS_open_by_handle_at = 'open_by_handle_at' as const;

/** A mount point of the device `sdev` (kernel dev_t: major << 20 | minor). */
function mountOf(sdev: number): string {
  const major = sdev >>> 20, minor = sdev & 0xfffff;
  for (const line of fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const f = line.split(' ');
    if (f[2] === `${major}:${minor}` && f[3] === '/') return f[4];
  }
  throw new StasisError(ErrorCodes.UNSUPPORTED, `inotify watch on device ${major}:${minor}: no mount of it here`);
}

function pathOfHandle(sdev: number, type: number, handle: Buffer): string {
  const mfd = fs.openSync(mountOf(sdev), fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
  try {
    const fh = Buffer.alloc(8 + handle.length);
    fh.writeUInt32LE(handle.length, 0);
    fh.writeInt32LE(type, 4);
    handle.copy(fh, 8);
    const fd = sys(SYS_open_by_handle_at, mfd, addressOf(fh), O_PATH | O_CLOEXEC);
    try {
      return fs.readlinkSync(`/proc/self/fd/${fd}`);
    } finally {
      sysTry('close', fd);
    }
  } finally {
    fs.closeSync(mfd);
  }
}

export const inotifyKind: FileKind = {
  name: 'inotify',
  type: FD_TYPES.INOTIFY,
  field: 'ify',
  match: (d) => d.link === 'anon_inode:inotify',
  dump(_ctx, d, id) {
    const wd = [];
    for (const m of d.info.raw.matchAll(/^inotify wd:([0-9a-f]+) ino:([0-9a-f]+) sdev:([0-9a-f]+) mask:([0-9a-f]+) ignored_mask:([0-9a-f]+) fhandle-bytes:([0-9a-f]+) fhandle-type:([0-9a-f]+) f_handle:([0-9a-f]+)/gm)) {
      const sdev = parseInt(m[3], 16), type = parseInt(m[7], 16);
      const handle = Buffer.from(m[8], 'hex');
      const words: bigint[] = [];
      for (let i = 0; i < handle.length; i += 8) { const w = Buffer.alloc(8); handle.copy(w, 0, i, i + 8); words.push(w.readBigUInt64LE(0)); }
      wd.push({
        id, i_ino: BigInt('0x' + m[2]), mask: parseInt(m[4], 16), ignored_mask: parseInt(m[5], 16), s_dev: sdev, wd: parseInt(m[1], 16),
        f_handle: { bytes: handle.length, type, handle: words, path: pathOfHandle(sdev, type, handle) },
      });
    }
    wd.sort((a, b) => a.wd - b.wd);
    return { id, flags: d.flags, fown: NO_FOWN, wd };
  },
  open(_ctx, tr, e) {
    const t = tr.task;
    const fd = Number(t.call('inotify_init1', e.flags & IN_NONBLOCK));
    for (const w of e.wd ?? []) {
      const path = w.f_handle?.path;
      if (!path) throw new StasisError(ErrorCodes.BAD_IMAGE, `inotify watch ${w.wd}: no path`);
      for (;;) {
        const got = Number(t.callRaw('inotify_add_watch', fd, t.putString(path), w.mask));
        if (got < 0) throw new StasisError(ErrorCodes.RESTORE_FAILED, `inotify watch ${w.wd} on ${path}: errno ${-got}`);
        if (got === w.wd) break;
        if (got > w.wd) throw new StasisError(ErrorCodes.RESTORE_FAILED, `inotify watch on ${path} got wd ${got}, wanted ${w.wd}`);
        // A wd that had been removed before the dump: take it and give it back.
        t.call('inotify_rm_watch', fd, got);
      }
    }
    return fd;
  },
};
