// epoll: the interest list (target fd, events, data) from fdinfo. A target is
// named by its fd number when it was added; kcmp(KCMP_EPOLL_TFD) confirms
// that number still holds that file. Targets are added back once every fd of
// the task is in place.
import { abi, kcmp, addressOf } from '../sys';
import { inBuf } from '../compel/remote';
import { StasisError, ErrorCodes } from '../errors';
import { FD_TYPES, NO_FOWN } from '../images/criu';
import type { Msg } from '../images/schema';
import { defineFileUnit } from '../unit/unit';

const { KCMP, KCMP_EPOLL_SLOT, EPOLL_EVENT, EPOLL_CTL, O } = abi;

/** tfd lines of an epoll fd's fdinfo. */
export function parseEpollTargets(raw: string): { tfd: number; events: number; data: bigint; pos: bigint; inode: bigint; dev: number }[] {
  const out = [];
  for (const m of raw.matchAll(/^tfd:\s*(\d+)\s+events:\s*([0-9a-f]+)\s+data:\s*([0-9a-f]+)\s+pos:\s*(\d+)\s+ino:\s*([0-9a-f]+)\s+sdev:\s*([0-9a-f]+)/gm)) {
    out.push({ tfd: Number(m[1]), events: parseInt(m[2], 16), data: BigInt('0x' + m[3]), pos: BigInt(m[4]), inode: BigInt('0x' + m[5]), dev: parseInt(m[6], 16) });
  }
  return out;
}

export const eventpollUnit = defineFileUnit({
  name: 'epoll',
  file: {
    type: FD_TYPES.EVENTPOLL,
    field: 'epfd',
    match: (d) => d.link === 'anon_inode:[eventpoll]',
    dump(ctx, d, id) {
      const tfd: Msg<'eventpoll_tfd_entry'>[] = [];
      const targets = parseEpollTargets(d.info.raw);
      // One in flight is made again by whichever process refills the queue: its targets must be that one's fds.
      if (d.targetsOf && targets.length && ctx.processes.length > 1) {
        throw new StasisError(ErrorCodes.UNSUPPORTED, `an epoll in flight watching ${targets.length} file(s), in a tree of several processes; not supported`);
      }
      const owner = d.targetsOf ?? d.pid;
      for (const t of targets) {
        const slot = KCMP_EPOLL_SLOT.encode({ efd: d.fd, tfd: t.tfd, toff: 0 });
        let same = false;
        try { same = kcmp(owner, d.pid, KCMP.EPOLL_TFD, t.tfd, Number(addressOf(slot))) === 0; } catch { same = false; }
        if (!same) {
          throw new StasisError(ErrorCodes.UNSUPPORTED, `epoll ${d.targetsOf ? 'in flight' : `fd ${d.fd} of pid ${d.pid}`} watches a file no longer open as fd ${t.tfd}${d.targetsOf ? ` of pid ${owner}` : ''}; not supported`);
        }
        tfd.push({ id, ...t });
      }
      return { id, flags: d.flags, fown: NO_FOWN, tfd };
    },
    open: (_ctx, tr, e) => tr.task.callNum('epoll_create1', e.flags & O.CLOEXEC),
    finish(_ctx, tr, e, fd) {
      for (const x of e.tfd ?? []) {
        tr.task.call('epoll_ctl', fd, EPOLL_CTL.ADD, x.tfd, inBuf(EPOLL_EVENT.encode({ events: x.events, data: x.data })));
      }
    },
    describe: (e) => `epoll on fds ${(e.tfd ?? []).map((t) => t.tfd).join(',')}`,
  },
});
