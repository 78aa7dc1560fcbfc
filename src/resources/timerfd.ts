// timerfd: clock, remaining time and interval, expirations not yet read
// (fdinfo), re-created with timerfd_create/timerfd_settime and TFD_IOC_SET_TICKS.
import { abi } from '../sys';
import { inBuf } from '../compel/remote';
import { fdinfoField } from '../proc/proc';
import { FD_TYPES, NO_FOWN } from '../images/criu';
import { defineFileUnit } from '../unit/unit';

const { TFD, TFD_IOC_SET_TICKS, ITIMERSPEC } = abi;

export function parseTimespec(v: string): [bigint, bigint] {
  const m = /\(\s*(\d+),\s*(\d+)\s*\)/.exec(v);
  if (!m) throw new Error(`unparsable timerfd time '${v}'`);
  return [BigInt(m[1]), BigInt(m[2])];
}

export const timerfdUnit = defineFileUnit({
  name: 'timerfd',
  file: {
    type: FD_TYPES.TIMERFD,
    field: 'tfd',
    match: (d) => d.link === 'anon_inode:[timerfd]',
    dump(_ctx, d, id) {
      const field = (k: string) => fdinfoField(d.info, k, `fd ${d.fd} of pid ${d.pid}`);
      // fdinfo shows the time left, relative, whatever the flags it was set with.
      const [vsec, vnsec] = parseTimespec(field('it_value'));
      const [isec, insec] = parseTimespec(field('it_interval'));
      return {
        id, flags: d.flags, fown: NO_FOWN, clockid: Number(field('clockid')), ticks: BigInt(field('ticks')),
        settime_flags: Number(field('settime flags')), vsec, vnsec, isec, insec,
      };
    },
    open(_ctx, tr, e) {
      const t = tr.task;
      const fd = t.callNum('timerfd_create', e.clockid, e.flags & TFD.NONBLOCK);
      const armed = e.vsec !== 0n || e.vnsec !== 0n || e.isec !== 0n || e.insec !== 0n;
      // Armed but due now: a zero it_value would disarm it, so fire in 1 ns.
      const due = e.vsec === 0n && e.vnsec === 0n;
      if (armed) t.call('timerfd_settime', fd, 0, inBuf(ITIMERSPEC.encode({ isec: e.isec, insec: e.insec, vsec: e.vsec, vnsec: due ? 1n : e.vnsec })), 0);
      if (e.ticks !== 0n) t.call('ioctl', fd, TFD_IOC_SET_TICKS, inBuf(abi.u64s([e.ticks])));
      return fd;
    },
    describe: (e) => `timerfd clock ${e.clockid} every ${e.isec}.${String(e.insec).padStart(9, '0')}s`,
  },
});
