// epoll: the interest list (target fd, events, data) from fdinfo. A target is
// named by its fd number when it was added; kcmp(KCMP_EPOLL_TFD) confirms
// that number still holds that file. Targets are added back once every fd of
// the task is in place.
import { abi, kcmp, addressOf } from '../sys';
import { StasisError, ErrorCodes } from '../errors';
import { FD_TYPES } from './fdtypes';
import { NO_FOWN, type FileKind } from './filekind';

const EPOLL_CTL_ADD = 1;

export const eventpollKind: FileKind = {
  name: 'epoll',
  type: FD_TYPES.EVENTPOLL,
  field: 'epfd',
  match: (d) => d.link === 'anon_inode:[eventpoll]',
  dump(_ctx, d, id) {
    const tfd = [];
    for (const m of d.info.raw.matchAll(/^tfd:\s*(\d+)\s+events:\s*([0-9a-f]+)\s+data:\s*([0-9a-f]+)\s+pos:\s*(\d+)\s+ino:\s*([0-9a-f]+)\s+sdev:\s*([0-9a-f]+)/gm)) {
      const target = Number(m[1]);
      // struct kcmp_epoll_slot { u32 efd, tfd, toff; }
      const slot = Buffer.alloc(12);
      slot.writeUInt32LE(d.fd, 0); slot.writeUInt32LE(target, 4); slot.writeUInt32LE(0, 8);
      let same = false;
      try { same = kcmp(d.pid, d.pid, abi.KCMP.EPOLL_TFD, target, Number(addressOf(slot))) === 0; } catch { same = false; }
      if (!same) {
        throw new StasisError(ErrorCodes.UNSUPPORTED, `epoll fd ${d.fd} of pid ${d.pid} watches a file no longer open as fd ${target}; not supported`);
      }
      tfd.push({ id, tfd: target, events: parseInt(m[2], 16), data: BigInt('0x' + m[3]), pos: BigInt(m[4]), inode: BigInt('0x' + m[5]), dev: parseInt(m[6], 16) });
    }
    return { id, flags: d.flags, fown: NO_FOWN, tfd };
  },
  open(_ctx, tr, e) {
    return Number(tr.task.call('epoll_create1', e.flags & abi.O.CLOEXEC));
  },
  finish(_ctx, tr, e, fd) {
    const t = tr.task;
    for (const x of e.tfd ?? []) {
      // struct epoll_event is packed on x86-64: u32 events, u64 data.
      const ev = Buffer.alloc(12);
      ev.writeUInt32LE(x.events >>> 0, 0);
      ev.writeBigUInt64LE(BigInt(x.data), 4);
      t.call('epoll_ctl', fd, EPOLL_CTL_ADD, x.tfd, t.put(ev, 3072));
    }
  },
};
