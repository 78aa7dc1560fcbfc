// AIO completion rings (io_setup): a shared mapping of the kernel's, /[aio]
// in maps, where completed requests wait as io_events between head and tail.
// Dump: its pages as for anonymous memory, and criu's aio_ring_entry (its
// address, the request count io_setup was asked for as far as the ring size
// tells, its length), its pages read through first so that pagemap shows
// them all. Restore: the pages go into a plain mapping at the
// ring's address (address-space, pages); then io_setup makes a new ring of
// the same size, requests that end at once (1-byte writes to /dev/null) move
// its tail to where the old one's was (a whole turn first when the tail had
// wrapped below the head: the kernel counts what it completed), its head is
// set, the old events are copied in, and the new ring is moved (mremap) over
// the plain mapping. Requests still in flight at dump (submitted, not yet
// completed) have no trace the kernel shows: they are not carried.
import * as fs from 'node:fs';
import { abi } from '../../sys';
import { StasisError, ErrorCodes } from '../../errors';
import { VMA } from '../../images/criu';
import type { Msg } from '../../images/schema';
import { ioBuf, outBuf, linked, type RemoteTask } from '../../compel/remote';
import type { TaskRestore } from '../../unit/restore-ctx';
import type { ClassifiedVma } from './classify';
import type { LoadedMm } from './load';

const { AIO_RING, IO_EVENT, IOCB, IOCB_CMD, AIO_RING_MAGIC, MREMAP, O, u64s } = abi;

/** Requests io_submit is given at once (their pointers fit the scratch page with the iocb). */
const BATCH = 256;

/** io_events a ring of `len` bytes holds. */
function eventsIn(len: number): number {
  return Math.floor((len - AIO_RING.size) / IO_EVENT.size);
}

function readHeader(mem: number, at: bigint): ReturnType<typeof AIO_RING.decode> {
  const b = Buffer.alloc(AIO_RING.size);
  if (fs.readSync(mem, b, 0, b.length, Number(at)) !== b.length) throw new Error(`short read of the AIO ring at ${at.toString(16)}`);
  return AIO_RING.decode(b);
}

/** aio_ring_entry of each AIO ring VMA of a frozen process; a ring the kernel did not lay out as expected is refused. */
export function aioRings(pid: number, vmas: readonly ClassifiedVma[]): Msg<'aio_ring_entry'>[] {
  const rings = vmas.filter((cv) => cv.status & VMA.AREA_AIORING);
  if (!rings.length) return [];
  const mem = fs.openSync(`/proc/${pid}/mem`, 'r');
  try {
    return rings.map((cv) => {
      const len = Number(cv.vma.end - cv.vma.start);
      // The kernel fills the ring through its own mapping: pages the task never touched are
      // not in its page tables, and pagemap would not show them. Reading them here maps them.
      const whole = Buffer.alloc(len);
      if (fs.readSync(mem, whole, 0, len, Number(cv.vma.start)) !== len) throw new StasisError(ErrorCodes.UNSUPPORTED, `pid ${pid}: the AIO ring at ${cv.vma.start.toString(16)} cannot be read whole`);
      const h = AIO_RING.decode(whole);
      const nr = eventsIn(len);
      if (h.magic !== AIO_RING_MAGIC || h.header_length !== AIO_RING.size || h.incompat_features !== 0 || h.nr !== nr || h.head >= nr || h.tail >= nr) {
        throw new StasisError(ErrorCodes.UNSUPPORTED, `pid ${pid}: the AIO ring at ${cv.vma.start.toString(16)} is not laid out as stasis knows (magic ${h.magic.toString(16)}, header ${h.header_length} bytes, ${h.nr} events, head ${h.head}, tail ${h.tail}); not supported`);
      }
      // io_setup(n) makes room for 2n + 2 events (n at least 4 per CPU), rounded up to whole pages.
      return { id: cv.vma.start, nr_req: Math.floor((nr - 2) / 2), ring_len: len };
    });
  } finally {
    fs.closeSync(mem);
  }
}

/** Every AIO ring of the task made again at its address, with its head, tail and events (after its pages are in). */
export function restoreAioRings(tr: TaskRestore, m: LoadedMm): void {
  const aios = m.mm.aios ?? [];
  if (!aios.length) return;
  const mem = fs.openSync(`/proc/${tr.task.pid}/mem`, 'r+');
  try {
    for (const a of aios) restoreRing(tr.task, mem, a);
  } finally {
    fs.closeSync(mem);
  }
}

function restoreRing(t: RemoteTask, mem: number, a: Msg<'aio_ring_entry'>): void {
  const where = `AIO ring at ${a.id.toString(16)} of pid ${t.pid}`;
  const saved = Buffer.alloc(a.ring_len);
  if (fs.readSync(mem, saved, 0, saved.length, Number(a.id)) !== saved.length) throw new StasisError(ErrorCodes.RESTORE_FAILED, `${where}: short read of its pages`);
  const old = AIO_RING.decode(saved);
  const nr = eventsIn(a.ring_len);
  if (old.nr !== nr || old.head >= nr || old.tail >= nr) throw new StasisError(ErrorCodes.BAD_IMAGE, `${where}: its header says ${old.nr} events, head ${old.head}, tail ${old.tail}, for a ring of ${nr}`);
  // aio_context_t: zero going in, the new ring's address coming out.
  const ctxp = ioBuf(Buffer.alloc(8));
  t.call('io_setup', a.nr_req, ctxp);
  const ring = ctxp.data.readBigUInt64LE(0);
  try {
    const fresh = readHeader(mem, ring);
    if (fresh.nr !== nr) throw new StasisError(ErrorCodes.RESTORE_FAILED, `${where}: io_setup(${a.nr_req}) made a ring of ${fresh.nr} events, not ${nr} (more CPUs here?)`);
    advance(t, mem, ring, old.head, old.tail, nr);
    if (fs.writeSync(mem, saved, AIO_RING.size, a.ring_len - AIO_RING.size, Number(ring) + AIO_RING.size) !== a.ring_len - AIO_RING.size) {
      throw new StasisError(ErrorCodes.RESTORE_FAILED, `${where}: short write of its events`);
    }
    const moved = t.callRaw('mremap', ring, a.ring_len, a.ring_len, MREMAP.MAYMOVE | MREMAP.FIXED, a.id);
    if (moved !== a.id) throw new StasisError(ErrorCodes.RESTORE_FAILED, `${where}: mremap of the new ring gave ${moved < 0n ? `errno ${-moved}` : moved.toString(16)}`);
  } catch (e) {
    t.callRaw('io_destroy', ring);
    throw e;
  }
}

/** Complete requests on the new ring until its tail and head are the old ones'. */
function advance(t: RemoteTask, mem: number, ring: bigint, head: number, tail: number, nr: number): void {
  if (head === 0 && tail === 0) return;
  const count = tail < head ? nr + tail : tail;
  const fd = t.open('/dev/null', O.WRONLY | O.CLOEXEC);
  const headAt = Number(ring) + AIO_RING.offsets.head;
  try {
    for (let done = 0; done < count; ) {
      const n = Math.min(count - done, nr - 1, BATCH);
      const byte = outBuf(1);
      const iocb = linked(IOCB.size, [byte], (at) => IOCB.encode({ aio_fildes: fd, aio_lio_opcode: IOCB_CMD.PWRITE, aio_buf: at(byte), aio_nbytes: 1 }));
      const list = linked(8 * n, [iocb], (at) => u64s(Array(n).fill(at(iocb))));
      const got = t.callNum('io_submit', ring, n, list);
      if (got <= 0) throw new StasisError(ErrorCodes.RESTORE_FAILED, `AIO ring of pid ${t.pid}: io_submit completed no request`);
      done += got;
      // Consuming events as getevents would (the kernel reads the head back): room for the next ones.
      const h = Buffer.alloc(4);
      h.writeUInt32LE(Math.min(done, head));
      fs.writeSync(mem, h, 0, 4, headAt);
    }
  } finally {
    t.call('close', fd);
  }
}
