// The proto2 codec and image framing, without root or any tool.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { encode, decode, CodecError } from '../../src/images/codec';
import { encodeImage, decodeImage, parts } from '../../src/images/image';
import { MAGIC, IMG_COMMON_MAGIC } from '../../src/images/magic';
import type { Msg } from '../../src/images/schema';
import { StasisError } from '../../src/errors';
import { pagemapPages } from '../../src/images/pagemap';

test('every scalar kind round-trips, extremes included', () => {
  const e: Msg<'posix_timer_entry'> = {
    it_id: 0xffffffff, clock_id: 0, si_signo: 64, it_sigev_notify: 4, sival_ptr: 0xffffffffffffffffn, overrun: 7,
    isec: 0n, insec: 999999999n, vsec: 1n << 62n, vnsec: 5n, notify_thread_id: -5,
  };
  assert.deepEqual(decode('posix_timer_entry', encode('posix_timer_entry', e)), e);
  const v: Msg<'vma_entry'> = { start: 0x7fff0000n, end: 0x7fff1000n, pgoff: 0n, shmid: 3n, prot: 5, flags: 2, status: 0x201, fd: -1n, madv: 1n << 63n };
  assert.deepEqual(decode('vma_entry', encode('vma_entry', v)), v);
  const t: Msg<'thread_core_entry'> = { futex_rla: 0n, futex_rla_len: 24, sched_nice: -20, comm: 'héllo', blk_sigset: 0n };
  const back = decode('thread_core_entry', encode('thread_core_entry', t));
  assert.equal(back.sched_nice, -20, 'sint32');
  assert.equal(back.comm, 'héllo', 'utf-8 string');
});

test('nested messages, repeated fields and bytes', () => {
  const f: Msg<'file_entry'> = {
    type: 5, id: 9,
    usk: {
      id: 9, ino: 1234, type: 1, state: 10, flags: 2, uflags: 0, backlog: 128, peer: 0,
      fown: { uid: 0, euid: 0, signum: 0, pid_type: 0, pid: 0 },
      opts: { so_sndbuf: 1, so_rcvbuf: 2, so_snd_tmo_sec: 0n, so_snd_tmo_usec: 0n, so_rcv_tmo_sec: 0n, so_rcv_tmo_usec: 0n },
      name: Buffer.from('\0abstract'),
    },
  };
  const back = decode('file_entry', encode('file_entry', f));
  assert.deepEqual(back.usk!.name, Buffer.from('\0abstract'));
  assert.equal(back.usk!.opts.so_rcvbuf, 2);
  const cr: Msg<'creds_entry'> = { uid: 1, gid: 2, euid: 3, egid: 4, suid: 5, sgid: 6, fsuid: 7, fsgid: 8, secbits: 0, cap_inh: [0, 0], cap_prm: [0xffffffff, 0x1ff], cap_eff: [], cap_bnd: [1, 2], groups: [10, 20, 30] };
  const c2 = decode('creds_entry', encode('creds_entry', cr));
  assert.deepEqual(c2.groups, [10, 20, 30]);
  assert.deepEqual(c2.cap_eff, [], 'an absent repeated field decodes as []');
  assert.deepEqual(c2.cap_prm, [0xffffffff, 0x1ff]);
});

test('repeated scalars are written unpacked (as CRIU) and read packed or not', () => {
  const b = encode('pstree_entry', { pid: 1, ppid: 0, pgid: 1, sid: 1, threads: [1, 2] });
  // field 5, wire type 0, twice: unpacked
  assert.deepEqual([...b.subarray(-4)], [0x28, 1, 0x28, 2]);
  const packed = Buffer.concat([b.subarray(0, b.length - 4), Buffer.from([0x2a, 2, 1, 2])]);
  assert.deepEqual(decode('pstree_entry', packed).threads, [1, 2]);
});

test('unknown fields are skipped; wrong wire types and missing required fields are refused', () => {
  const b = encode('fs_entry', { cwd_id: 1, root_id: 2 });
  const withUnknown = Buffer.concat([b, Buffer.from([0x78, 5]) /* field 15 varint */, Buffer.from([0x82, 0x01, 2, 0xaa, 0xbb]) /* field 16 bytes */]);
  assert.deepEqual(decode('fs_entry', withUnknown), { cwd_id: 1, root_id: 2 });
  assert.throws(() => decode('fs_entry', Buffer.from([0x08, 1])), (e) => e instanceof CodecError && /root_id is missing/.test(e.message));
  assert.throws(() => decode('fs_entry', Buffer.from([0x0a, 1, 0])), /wire type 2, expected 0/);
  assert.throws(() => decode('fs_entry', Buffer.from([0x08])), /truncated varint/);
  assert.throws(() => decode('fs_entry', Buffer.from([0x82, 0x01, 50, 1])), /runs past the end/);
  // A field the schema does not know for that message is a programming error on encode.
  assert.throws(() => encode('fs_entry', { cwd_id: 1, root_id: 2, nope: 3 } as never), /has no field nope/);
  assert.throws(() => encode('fs_entry', { cwd_id: 1 } as never), /root_id is missing/);
  assert.throws(() => encode('fs_entry', { cwd_id: 1.5, root_id: 2 }), /must be a uint32/);
  assert.throws(() => encode('vma_entry', { start: 1, end: 2n } as never), /must be a bigint/);
});

test('image framing: header, length-prefixed entries, payloads; damage is refused', () => {
  const img = encodeImage('PIPES_DATA', [{ msg: 'pipe_data_entry', entry: { pipe_id: 7, bytes: 3 }, payload: Buffer.from('abc') }]);
  assert.equal(img.readUInt32LE(0), IMG_COMMON_MAGIC);
  assert.equal(img.readUInt32LE(4), MAGIC.PIPES_DATA);
  const inv = encodeImage('INVENTORY', parts('inventory_entry', [{ img_version: 2 }]));
  assert.equal(inv.readUInt32LE(0), MAGIC.INVENTORY, 'the inventory has its magic alone');
  assert.deepEqual(decodeImage('x', inv, 'INVENTORY', 'inventory_entry'), [{ img_version: 2 }]);
  const two = encodeImage('FS', parts('fs_entry', [{ cwd_id: 1, root_id: 2 }, { cwd_id: 3, root_id: 4, umask: 0o22 }]));
  assert.deepEqual(decodeImage('x', two, 'FS', 'fs_entry').map((e) => e.cwd_id), [1, 3]);
  assert.throws(() => decodeImage('x', two, 'MM', 'mm_entry'), (e) => e instanceof StasisError && /bad magic/.test(e.message));
  assert.throws(() => decodeImage('x', two.subarray(0, two.length - 1), 'FS', 'fs_entry'), /truncated entry/);
  assert.throws(() => decodeImage('x', two.subarray(0, 10), 'FS', 'fs_entry'), /truncated entry header/);
  const huge = Buffer.from(two);
  huge.writeUInt32LE(0xffffffff, 8);
  assert.throws(() => decodeImage('x', huge, 'FS', 'fs_entry'), /needs 4294967295 bytes/);
});

test('pagemap entries as CRIU 4.2 writes them (count in field 5, field 2 zero) and as older ones (field 2 only)', () => {
  // (Entries only: the head is another message.)
  const img = encodeImage('PAGEMAP', [
    ...parts('pagemap_entry', [
      { vaddr: 0x400000n, nr_pages: 0, nr_pages64: 5n, flags: 4 },
      { vaddr: 0x800000n, nr_pages: 7, flags: 2 },
      { vaddr: 0x900000n, nr_pages: 0, nr_pages64: 1n << 40n },
    ]),
  ]);
  const es = decodeImage('pagemap-1.img', img, 'PAGEMAP', 'pagemap_entry');
  assert.deepEqual(es.map((e) => e.nr_pages64), [5n, undefined, 1n << 40n]);
  assert.deepEqual(es.slice(0, 2).map((e) => pagemapPages(e, 'pagemap-1.img')), [5, 7]);
  assert.equal(pagemapPages(es[2], 'pagemap-1.img'), 2 ** 40);
  assert.throws(() => pagemapPages({ vaddr: 0x1000n, nr_pages: 0, nr_pages64: 1n << 60n }, 'pagemap-9.img'), (e: unknown) => e instanceof StasisError && /^pagemap-9\.img: entry at 1000 counts 1152921504606846976 pages$/.test(e.message));
  // Field 5 is written on its wire number: the bytes of entry 1 carry tag (5 << 3) | varint.
  assert.ok(encode('pagemap_entry', { vaddr: 0n, nr_pages: 0, nr_pages64: 5n }).includes(Buffer.from([5 << 3, 5])));
});
