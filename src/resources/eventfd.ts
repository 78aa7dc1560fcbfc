// eventfd: its counter and flags (fdinfo), re-created with eventfd2.
import { FD_TYPES } from './fdtypes';
import { NO_FOWN, fdinfoField, type FileKind } from './filekind';

/** EFD_SEMAPHORE has no field of its own in eventfd_file_entry: it rides in
 *  flags bit 0, which an eventfd's access mode (always O_RDWR) never uses. */
const EFD_SEMAPHORE = 1;
const EFD_NONBLOCK = 0o4000;

export const eventfdKind: FileKind = {
  name: 'eventfd',
  type: FD_TYPES.EVENTFD,
  field: 'efd',
  match: (d) => d.link === 'anon_inode:[eventfd]',
  dump(_ctx, d, id) {
    const sem = d.info.extra.get('eventfd-semaphore') === '1' ? EFD_SEMAPHORE : 0;
    return { id, flags: d.flags | sem, fown: NO_FOWN, counter: BigInt('0x' + fdinfoField(d, 'eventfd-count')) /* printed in hex */ };
  },
  open(_ctx, tr, e) {
    const flags = (e.flags & EFD_NONBLOCK) | (e.flags & EFD_SEMAPHORE);
    // The counter is an unsigned 64-bit value; eventfd2 takes an initial value of 32 bits,
    // so the rest is added with a write.
    const counter = BigInt(e.counter);
    const fd = Number(tr.task.call('eventfd2', counter <= 0xffffffffn ? counter : 0n, flags));
    if (counter > 0xffffffffn) {
      const b = Buffer.alloc(8);
      b.writeBigUInt64LE(counter);
      tr.task.call('write', fd, tr.task.put(b, 3072), 8);
    }
    return fd;
  },
};
