// inotify: the watches (wd, mask, and the watched inode as a file handle) from
// fdinfo. The handle is turned back into a path with open_by_handle_at on a
// mount of the same device; restore adds the watches again in wd order so
// they get the same wd numbers (a gap is filled by a watch added and removed).
import * as fs from 'node:fs';
import { abi, sys, sysTry, addressOf } from '../sys';
import { cstr } from '../compel/remote';
import { StasisError, ErrorCodes } from '../errors';
import { FD_TYPES, NO_FOWN } from '../images/criu';
import type { Msg } from '../images/schema';
import { defineFileUnit } from '../unit/unit';

const { O, IN_NONBLOCK, FILE_HANDLE } = abi;

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
    const fh = Buffer.concat([FILE_HANDLE.encode({ handle_bytes: handle.length, handle_type: type }), handle]);
    const fd = sys('open_by_handle_at', mfd, addressOf(fh), O.PATH | O.CLOEXEC);
    try {
      return fs.readlinkSync(`/proc/self/fd/${fd}`);
    } finally {
      sysTry('close', fd);
    }
  } finally {
    fs.closeSync(mfd);
  }
}

export interface WatchLine { wd: number; ino: bigint; sdev: number; mask: number; ignoredMask: number; handleType: number; handle: Buffer }

/** "inotify wd:..." lines of an inotify fd's fdinfo. */
export function parseInotifyWatches(raw: string): WatchLine[] {
  const out: WatchLine[] = [];
  for (const m of raw.matchAll(/^inotify wd:([0-9a-f]+) ino:([0-9a-f]+) sdev:([0-9a-f]+) mask:([0-9a-f]+) ignored_mask:([0-9a-f]+) fhandle-bytes:([0-9a-f]+) fhandle-type:([0-9a-f]+) f_handle:([0-9a-f]+)/gm)) {
    out.push({
      wd: parseInt(m[1], 16), ino: BigInt('0x' + m[2]), sdev: parseInt(m[3], 16), mask: parseInt(m[4], 16),
      ignoredMask: parseInt(m[5], 16), handleType: parseInt(m[7], 16), handle: Buffer.from(m[8], 'hex'),
    });
  }
  return out.sort((a, b) => a.wd - b.wd);
}

export const inotifyUnit = defineFileUnit({
  name: 'inotify',
  file: {
    type: FD_TYPES.INOTIFY,
    field: 'ify',
    match: (d) => d.link === 'anon_inode:inotify',
    dump(_ctx, d, id) {
      const wd: Msg<'inotify_wd_entry'>[] = parseInotifyWatches(d.info.raw).map((w) => {
        const path = pathOfHandle(w.sdev, w.handleType, w.handle);
        // A path re-opens another file; a ghost made again would send the watch events of its removal.
        if (path.endsWith(' (deleted)')) throw new StasisError(ErrorCodes.UNSUPPORTED, `fd ${d.fd} of pid ${d.pid}: inotify watch ${w.wd} is on a deleted file (${path}); not supported`);
        const words: bigint[] = [];
        for (let i = 0; i < w.handle.length; i += 8) { const b = Buffer.alloc(8); w.handle.copy(b, 0, i, i + 8); words.push(b.readBigUInt64LE(0)); }
        return {
          id, i_ino: w.ino, mask: w.mask, ignored_mask: w.ignoredMask, s_dev: w.sdev, wd: w.wd,
          f_handle: { bytes: w.handle.length, type: w.handleType, handle: words, path },
        };
      });
      return { id, flags: d.flags, fown: NO_FOWN, wd };
    },
    check(e, where) {
      for (const w of e.wd ?? []) if (!w.f_handle.path) throw new StasisError(ErrorCodes.BAD_IMAGE, `${where}: inotify watch ${w.wd} has no path`);
    },
    open(_ctx, tr, e) {
      const t = tr.task;
      const fd = t.callNum('inotify_init1', e.flags & IN_NONBLOCK);
      for (const w of e.wd ?? []) {
        const path = w.f_handle.path!;
        for (;;) {
          const got = Number(t.callRaw('inotify_add_watch', fd, cstr(path), w.mask));
          if (got < 0) throw new StasisError(ErrorCodes.RESTORE_FAILED, `inotify watch ${w.wd} on ${path}: errno ${-got}`);
          if (got === w.wd) break;
          if (got > w.wd) throw new StasisError(ErrorCodes.RESTORE_FAILED, `inotify watch on ${path} got wd ${got}, wanted ${w.wd}`);
          // A wd that had been removed before the dump: take it and give it back.
          t.call('inotify_rm_watch', fd, got);
        }
      }
      return fd;
    },
    describe: (e) => `inotify ${(e.wd ?? []).map((w) => w.f_handle.path).join(', ')}`,
  },
});
