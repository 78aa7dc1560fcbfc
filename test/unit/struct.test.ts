// Kernel struct layouts come out of their declarations with the sizes and
// offsets the uapi headers give.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { abi } from '../../src/sys';

test('sizes and offsets match the kernel', () => {
  assert.equal(abi.CLONE_ARGS.size, 88);
  assert.equal(abi.CLONE_ARGS.offsets.set_tid, 64);
  assert.equal(abi.PRCTL_MM_MAP.size, 104);
  assert.equal(abi.PRCTL_MM_MAP.offsets.auxv_size, 96);
  assert.equal(abi.PRCTL_MM_MAP.offsets.exe_fd, 100);
  assert.equal(abi.EPOLL_EVENT.size, 12, 'packed on x86-64');
  assert.equal(abi.EPOLL_EVENT.offsets.data, 4);
  assert.equal(abi.SIGEVENT.size, 64);
  assert.equal(abi.SIGEVENT.offsets.tid, 16);
  assert.equal(abi.STACK_T.size, 24);
  assert.equal(abi.STACK_T.offsets.ss_size, 16);
  assert.equal(abi.FLOCK.size, 32);
  assert.equal(abi.FLOCK.offsets.l_start, 8);
  assert.equal(abi.FLOCK.offsets.l_pid, 24);
  assert.equal(abi.SOCKADDR_IN.size, 16);
  assert.equal(abi.SOCKADDR_IN6.size, 28);
  assert.equal(abi.INET_DIAG_MSG.offsets.inode, 68);
  assert.equal(abi.UNIX_DIAG_REQ.size, 24);
  assert.equal(abi.INET_DIAG_REQ_V2.size, 56);
  assert.equal(abi.MSGHDR.size, 56);
  assert.equal(abi.RSEQ_CONFIG.size, 24);
  assert.equal(abi.TCP_REPAIR_WINDOW.size, 20);
  assert.equal(abi.SOCK_FPROG.size, 16);
});

test('encode/decode round trip, big-endian ports, missing fields are zero', () => {
  const a = abi.SOCKADDR_IN.encode({ family: 2, port: 8080, addr: Buffer.from([127, 0, 0, 1]) });
  assert.deepEqual([...a.subarray(0, 8)], [2, 0, 0x1f, 0x90, 127, 0, 0, 1]);
  assert.deepEqual(abi.SOCKADDR_IN.decode(a).port, 8080);
  const s = abi.STACK_T.encode({ ss_sp: 0x1000n, ss_size: 8192 });
  assert.deepEqual(abi.STACK_T.decode(s), { ss_sp: 0x1000n, ss_flags: 0, ss_size: 8192n });
  assert.deepEqual(abi.readI32s(abi.i32s([1, -2, 3]), 3), [1, -2, 3]);
});
