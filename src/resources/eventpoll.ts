// epoll: the interest list (target fd, events, data) from fdinfo. A target is
// named by its fd number when it was added; kcmp(KCMP_EPOLL_TFD) confirms
// that number still holds that file, or finds the fd that does now (see
// findTarget). Targets are added back once every fd of the task is in place.
import * as fs from 'node:fs';
import { abi, kcmp, addressOf } from '../sys';
import { listFds } from '../proc/proc';
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

/**
 * The fd of `owner` (the process holding the epoll, or for one in flight the
 * process that will refill its queue) that holds the file a target watches. A target is named by
 * the fd number it was added with (and its rank `toff` among targets added
 * with that number, which then held other files); when that fd has been closed
 * or reused since, the file is looked for among the other fds of the process
 * (kcmp KCMP_EPOLL_TFD, as criu does) and the target is saved under that fd:
 * restore adds it back so (its events and data as they were; only the number
 * it is known by in the interest list changes). A file open nowhere else in
 * the process is refused.
 */
function findTarget(owner: number, epollPid: number, efd: number, t: { tfd: number; inode: bigint }, toff: number, what: string): number {
  const slot = KCMP_EPOLL_SLOT.encode({ efd, tfd: t.tfd, toff });
  const holds = (fd: number) => {
    try { return kcmp(owner, epollPid, KCMP.EPOLL_TFD, fd, Number(addressOf(slot))) === 0; } catch { return false; }
  };
  if (holds(t.tfd)) return t.tfd;
  for (const fd of listFds(owner)) {
    let ino: bigint;
    try { ino = fs.statSync(`/proc/${owner}/fd/${fd}`, { bigint: true }).ino; } catch { continue; }
    if (ino === t.inode && holds(fd)) return fd;
  }
  throw new StasisError(ErrorCodes.UNSUPPORTED, `${what} watches a file no longer open as fd ${t.tfd} nor as any other fd of ${owner === epollPid ? 'the process' : `pid ${owner}`}; not supported`);
}

export const eventpollUnit = defineFileUnit({
  name: 'epoll',
  file: {
    type: FD_TYPES.EVENTPOLL,
    field: 'epfd',
    match: (d) => d.link === 'anon_inode:[eventpoll]',
    dump(ctx, d, id) {
      const targets = parseEpollTargets(d.info.raw);
      // One in flight is made again by whichever process refills the queue: its targets must be that one's fds.
      if (d.targetsOf && targets.length && ctx.processes.length > 1) {
        throw new StasisError(ErrorCodes.UNSUPPORTED, `an epoll in flight watching ${targets.length} file(s), in a tree of several processes; not supported`);
      }
      const owner = d.targetsOf ?? d.pid;
      const what = d.targetsOf ? 'epoll in flight' : `epoll fd ${d.fd} of pid ${d.pid}`;
      const tfd: Msg<'eventpoll_tfd_entry'>[] = targets.map((t, i) => ({ id, ...t, tfd: findTarget(owner, d.pid, d.fd, t, targets.slice(0, i).filter((x) => x.tfd === t.tfd).length, what) }));
      // Each now names the file at its fd: two with one number would be one file added twice.
      const twice = tfd.find((t, i) => tfd.findIndex((x) => x.tfd === t.tfd) !== i);
      if (twice) throw new StasisError(ErrorCodes.UNSUPPORTED, `${what} watches the file of fd ${twice.tfd} under two fd numbers, one since closed; not supported`);
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
