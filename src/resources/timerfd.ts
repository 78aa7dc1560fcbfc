// timerfd: clock, remaining time and interval, expirations not yet read
// (fdinfo), re-created with timerfd_create/timerfd_settime and TFD_IOC_SET_TICKS.
import { FD_TYPES } from './fdtypes';
import { NO_FOWN, fdinfoField, type FileKind } from './filekind';

const TFD_NONBLOCK = 0o4000;
/** _IOW('T', 0, u64): needs CONFIG_CHECKPOINT_RESTORE, as kcmp does. */
const TFD_IOC_SET_TICKS = 0x40085400;

function timespec(v: string): [bigint, bigint] {
  const m = /\(\s*(\d+),\s*(\d+)\s*\)/.exec(v);
  if (!m) throw new Error(`unparsable timerfd time '${v}'`);
  return [BigInt(m[1]), BigInt(m[2])];
}

export const timerfdKind: FileKind = {
  name: 'timerfd',
  type: FD_TYPES.TIMERFD,
  field: 'tfd',
  match: (d) => d.link === 'anon_inode:[timerfd]',
  dump(_ctx, d, id) {
    // fdinfo shows the time left, relative, whatever the flags it was set with.
    const [vsec, vnsec] = timespec(fdinfoField(d, 'it_value'));
    const [isec, insec] = timespec(fdinfoField(d, 'it_interval'));
    return {
      id, flags: d.flags, fown: NO_FOWN, clockid: Number(fdinfoField(d, 'clockid')), ticks: BigInt(fdinfoField(d, 'ticks')),
      settime_flags: Number(fdinfoField(d, 'settime flags')), vsec, vnsec, isec, insec,
    };
  },
  open(_ctx, tr, e) {
    const t = tr.task;
    const fd = Number(t.call('timerfd_create', e.clockid, e.flags & TFD_NONBLOCK));
    const its = Buffer.alloc(32);
    its.writeBigUInt64LE(BigInt(e.isec), 0); its.writeBigUInt64LE(BigInt(e.insec), 8);
    its.writeBigUInt64LE(BigInt(e.vsec), 16); its.writeBigUInt64LE(BigInt(e.vnsec), 24);
    // Armed but due now: a zero it_value would disarm it, so fire in 1 ns.
    if (BigInt(e.vsec) === 0n && BigInt(e.vnsec) === 0n && (BigInt(e.isec) !== 0n || BigInt(e.insec) !== 0n)) its.writeBigUInt64LE(1n, 24);
    if (its.readBigUInt64LE(16) !== 0n || its.readBigUInt64LE(24) !== 0n) t.call('timerfd_settime', fd, 0, t.put(its, 3072), 0);
    if (BigInt(e.ticks) !== 0n) {
      const b = Buffer.alloc(8);
      b.writeBigUInt64LE(BigInt(e.ticks));
      t.call('ioctl', fd, TFD_IOC_SET_TICKS, t.put(b, 3200));
    }
    return fd;
  },
};
