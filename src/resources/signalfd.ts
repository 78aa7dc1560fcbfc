// signalfd: the signal mask it reads (fdinfo), re-created with signalfd4.
import { FD_TYPES } from './fdtypes';
import { NO_FOWN, fdinfoField, type FileKind } from './filekind';

const SFD_NONBLOCK = 0o4000;

export const signalfdKind: FileKind = {
  name: 'signalfd',
  type: FD_TYPES.SIGNALFD,
  field: 'sgfd',
  match: (d) => d.link === 'anon_inode:[signalfd]',
  dump: (_ctx, d, id) => ({ id, flags: d.flags, fown: NO_FOWN, sigmask: BigInt('0x' + fdinfoField(d, 'sigmask')) }),
  open(_ctx, tr, e) {
    const m = Buffer.alloc(8);
    m.writeBigUInt64LE(BigInt(e.sigmask));
    return Number(tr.task.call('signalfd4', -1, tr.task.put(m, 3072), 8, e.flags & SFD_NONBLOCK));
  },
};
