// The `criu swrk FD` transport: one SOCK_SEQPACKET socket, one protobuf
// message per packet (criu_req in, criu_resp out), no framing of its own.
// Packets are sized with MSG_PEEK|MSG_TRUNC before being read, as criu does.
// All blocking, synchronous: the server does nothing else meanwhile.
import * as fs from 'node:fs';
import { abi, sendPacket, recvPacket, peerCred, socketType } from '../sys';
import { encode, decode, CodecError } from '../images/codec';
import { StasisError, ErrorCodes, errnoName } from '../errors';
import type { Msg } from '../images/schema';

const { SOCK } = abi;

/** What callers' receive buffers hold: go-criu reads into 8 KiB. */
export const MAX_RESPONSE = 8192;

export class RpcChannel {
  /** The process that made the socket pair (whose fds images_dir_fd and work_dir_fd name). */
  readonly peer: number;

  constructor(readonly fd: number) {
    let type: number;
    try { type = socketType(fd); } catch (e) {
      throw new StasisError(ErrorCodes.USAGE, `swrk: fd ${fd} is not a socket (${(e as StasisError).code})`);
    }
    if (type !== SOCK.SEQPACKET) throw new StasisError(ErrorCodes.USAGE, `swrk: fd ${fd} is not a SOCK_SEQPACKET socket (type ${type})`);
    this.peer = peerCred(fd).pid;
  }

  /** The next request; undefined when the client has closed its end. Malformed: an RPC error. */
  recv(): Msg<'criu_req'> | undefined {
    const peek = recvPacket(this.fd, 0, { peek: true });
    if (typeof peek === 'number') throw this.ioError('recvmsg', peek);
    const p = recvPacket(this.fd, peek.length);
    if (typeof p === 'number') throw this.ioError('recvmsg', p);
    // fds nobody asked for (SCM_RIGHTS on a request) are not ours to keep.
    for (const fd of p.fds) closeQuietly(fd);
    if (p.length === 0) return undefined;
    try {
      return decode('criu_req', p.data);
    } catch (e) {
      if (e instanceof CodecError) throw new StasisError(ErrorCodes.RPC, `malformed request (${p.length} bytes): ${e.message}`);
      throw e;
    }
  }

  /** Send one response (with an fd passed alongside). Fails with RPC when the client is gone. */
  send(resp: Msg<'criu_resp'>, fd?: number): void {
    let buf = encode('criu_resp', resp);
    if (buf.length > MAX_RESPONSE && resp.cr_errmsg) {
      // A long error would not fit the client's buffer: keep its start.
      buf = encode('criu_resp', { ...resp, cr_errmsg: resp.cr_errmsg.slice(0, MAX_RESPONSE / 2) + '...' });
    }
    const r = sendPacket(this.fd, buf, fd === undefined ? [] : [fd]);
    if (r < 0) throw this.ioError('sendmsg', r);
  }

  private ioError(call: string, r: number): StasisError {
    const gone = r === -abi.ERRNO.EPIPE || r === -abi.ERRNO.ECONNRESET;
    return new StasisError(ErrorCodes.RPC, gone ? 'the client closed the connection' : `${call} on the swrk socket: ${errnoName(-r)}`);
  }
}

function closeQuietly(fd: number): void {
  try { fs.closeSync(fd); } catch { /* gone */ }
}
