// signalfd: the signal mask it reads (fdinfo), re-created with signalfd4.
import { abi } from '../sys';
import { inBuf } from '../compel/remote';
import { fdinfoField } from '../proc/proc';
import { FD_TYPES, NO_FOWN } from '../images/criu';
import { defineFileUnit } from '../unit/unit';

export const signalfdUnit = defineFileUnit({
  name: 'signalfd',
  file: {
    type: FD_TYPES.SIGNALFD,
    field: 'sgfd',
    match: (d) => d.link === 'anon_inode:[signalfd]',
    dump: (_ctx, d, id) => ({ id, flags: d.flags, fown: NO_FOWN, sigmask: BigInt('0x' + fdinfoField(d.info, 'sigmask', `fd ${d.fd} of pid ${d.pid}`)) }),
    open: (_ctx, tr, e) => tr.task.callNum('signalfd4', -1, inBuf(abi.u64s([e.sigmask])), 8, e.flags & abi.SFD_NONBLOCK),
    describe: (e) => `signalfd mask 0x${e.sigmask.toString(16)}`,
  },
});
