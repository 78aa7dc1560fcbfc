// eventfd: its counter and flags (fdinfo), re-created with eventfd2.
import { abi } from '../sys';
import { inBuf } from '../compel/remote';
import { fdinfoField } from '../proc/proc';
import { FD_TYPES, NO_FOWN } from '../images/criu';
import { defineFileUnit } from '../unit/unit';

const { EFD } = abi;

export const eventfdUnit = defineFileUnit({
  name: 'eventfd',
  file: {
    type: FD_TYPES.EVENTFD,
    field: 'efd',
    match: (d) => d.link === 'anon_inode:[eventfd]',
    dump(_ctx, d, id) {
      // EFD_SEMAPHORE has no field of its own in eventfd_file_entry: it rides in
      // flags bit 0, which an eventfd's access mode (always O_RDWR) never uses.
      const sem = d.info.extra.get('eventfd-semaphore') === '1' ? EFD.SEMAPHORE : 0;
      const count = BigInt('0x' + fdinfoField(d.info, 'eventfd-count', `fd ${d.fd} of pid ${d.pid}`)); // printed in hex
      return { id, flags: d.flags | sem, fown: NO_FOWN, counter: count };
    },
    open(_ctx, tr, e) {
      const flags = (e.flags & EFD.NONBLOCK) | (e.flags & EFD.SEMAPHORE);
      // The counter is an unsigned 64-bit value; eventfd2 takes an initial value of 32 bits,
      // so the rest is added with a write.
      const small = e.counter <= 0xffffffffn;
      const fd = tr.task.callNum('eventfd2', small ? e.counter : 0n, flags);
      if (!small) tr.task.call('write', fd, inBuf(abi.u64s([e.counter])), 8);
      return fd;
    },
    describe: (e) => `eventfd count ${e.counter}`,
  },
});
