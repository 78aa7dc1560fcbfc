// criu's page server protocol (criu/page-xfer.c), the facts of its wire
// format: a stream of 32-byte commands (struct page_server_iov, host byte
// order: u32 cmd, 4 bytes of padding, u64 nr_pages, u64 vaddr, u64 dst_id),
// page data following the commands that carry it.
//
//   OPEN2 dst_id            answered by 1 byte: has the receiver a parent
//                           pagemap for dst_id (then PE_PARENT runs may come)
//   ADD_F(flags) vaddr n    a pagemap entry; with PE_PRESENT, n pages of data follow
//   PARENT dst_id           answered by an int32: has_parent
//   CLOSE                   answered by an int32 status (0: everything written)
//
// dst_id is (id << 8) | type; type 1 is a process's pagemap (id: its pid as
// the images name it), 2 shared memory. The flags ride in the upper 16 bits
// of cmd. criu's receiver numbers the pages files it writes from 0x10001 in
// the order they are opened (up_page_ids_base: away from the sender's own
// pages ids); stasis's receiver does the same, so a sender knows the name
// and, sending the entries in address order, the bytes of every file the
// receiver writes (see client.ts: that is how its digest covers them).
import { struct } from '../sys/abi';

export const PS_IOV = struct({ cmd: 'u32', nr_pages: 'u64', vaddr: 'u64', dst_id: 'u64' });
export const PS_IOV_SIZE = PS_IOV.size; // 32

export const PS = {
  IOV_ADD: 1, IOV_HOLE: 2, IOV_OPEN: 3, IOV_OPEN2: 4, IOV_PARENT: 5, IOV_ADD_F: 6, IOV_GET: 7,
  IOV_CLOSE: 0x1023, IOV_FORCE_CLOSE: 0x1024,
} as const;
export const PS_CMD_BITS = 16;
export const PS_CMD_MASK = (1 << PS_CMD_BITS) - 1;
export const PS_TYPE_BITS = 8n;
export const PS_TYPE_MASK = (1n << PS_TYPE_BITS) - 1n;
export const PS_TYPE = { PID: 1n, SHMEM: 2n } as const;
/** The first pages id a receiver gives (criu: page_ids starts at 1, raised by 0x10000). */
export const PS_FIRST_PAGES_ID = 0x10001;

export const encodeCmd = (cmd: number, flags = 0): number => ((flags << PS_CMD_BITS) | cmd) >>> 0;
export const decodeCmd = (cmd: number): { cmd: number; flags: number } => ({ cmd: cmd & PS_CMD_MASK, flags: cmd >>> PS_CMD_BITS });
export const pidDstId = (vpid: number): bigint => (BigInt(vpid) << PS_TYPE_BITS) | PS_TYPE.PID;

export function iov(cmd: number, fields: { nr_pages?: number | bigint; vaddr?: bigint; dst_id?: bigint } = {}): Buffer {
  return PS_IOV.encode({ cmd, nr_pages: BigInt(fields.nr_pages ?? 0), vaddr: fields.vaddr ?? 0n, dst_id: fields.dst_id ?? 0n });
}
