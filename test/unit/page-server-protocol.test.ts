// criu's page server wire format (criu/page-xfer.c): struct page_server_iov
// is 32 bytes (u32 cmd, padding, u64 nr_pages, u64 vaddr, u64 dst_id), flags
// in the upper 16 bits of cmd, dst_id = id << 8 | type.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { PS, PS_IOV, PS_IOV_SIZE, encodeCmd, decodeCmd, pidDstId, iov } from '../../src/pageserver/protocol';

test('page_server_iov layout and command encoding are criu\'s', () => {
  assert.equal(PS_IOV_SIZE, 32);
  assert.deepEqual(PS_IOV.offsets, { cmd: 0, nr_pages: 8, vaddr: 16, dst_id: 24 });
  assert.deepEqual([PS.IOV_OPEN2, PS.IOV_ADD_F, PS.IOV_PARENT, PS.IOV_CLOSE], [4, 6, 5, 0x1023]);
  assert.equal(encodeCmd(PS.IOV_ADD_F, 4), 0x40006);
  assert.deepEqual(decodeCmd(0x40006), { cmd: 6, flags: 4 });
  assert.equal(pidDstId(1234), (1234n << 8n) | 1n);
  const b = iov(encodeCmd(PS.IOV_ADD_F, 1), { nr_pages: 3, vaddr: 0x7f0000001000n, dst_id: pidDstId(7) });
  assert.equal(b.toString('hex'), '06000100' + '00000000' + '0300000000000000' + '00100000007f0000' + '0107000000000000');
});
