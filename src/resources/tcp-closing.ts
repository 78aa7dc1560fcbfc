// TCP connections on their way to closing (--tcp-established).
//
// A FIN takes one sequence number. Which FINs a state holds:
//   FIN_WAIT1  ours sent (or queued behind unsent data), not acknowledged
//   FIN_WAIT2  ours acknowledged                    (the peer: CLOSE_WAIT)
//   CLOSE_WAIT the peer's received                  (the peer: FIN_WAIT2)
//   LAST_ACK   the peer's received, ours not acknowledged
//   CLOSING    both sent, ours not acknowledged
//
// FIN_WAIT1 is carried: the connection is rebuilt ESTABLISHED in repair mode
// from the numbers before our FIN, then shutdown(SHUT_WR) while still in
// repair mode queues the FIN again. Our own FIN is all the kernel lets us
// rebuild: a FIN received from the peer, or the peer's acknowledgment of
// ours, can only be put back by forging a packet from the peer and feeding it
// to the socket through the network lock (criu does, with raw packets marked
// to pass its lock); stasis does not, so those states are refused at dump.
// SYN_SENT too: criu reconnects it (a new SYN leaves); no handshake in flight
// can be rebuilt exactly.
import { sys, sysTry, addressOf, abi } from '../sys';
import { StasisError, ErrorCodes } from '../errors';
import type { Msg } from '../images/schema';

const { TCP_STATE: S, SOL, TCP, TCP_REPAIR_QUEUE: QUEUE, SHUT } = abi;

/** Connected states whose whole state goes through TCP_REPAIR. */
export function carriedConnection(state: number): boolean {
  return state === S.ESTABLISHED || state === S.FIN_WAIT1;
}

/** Why a connection in `state` cannot be carried (undefined: it can, or it is not a connection). */
export function closingRefusal(state: number): string | undefined {
  switch (state) {
    case S.FIN_WAIT2:
      return 'its FIN was acknowledged by the peer; rebuilding that needs a forged acknowledgment from the peer';
    case S.CLOSE_WAIT:
      return 'the peer\'s FIN was received; rebuilding that needs a forged FIN from the peer';
    case S.LAST_ACK:
    case S.CLOSING:
      return 'the peer\'s FIN was received (and its own is not acknowledged); rebuilding that needs a forged FIN from the peer';
    case S.SYN_SENT:
      return 'the connection is not established yet (its SYN is unanswered); a handshake in flight cannot be rebuilt';
    case S.SYN_RECV:
      return 'the handshake is not complete';
    default:
      return undefined;
  }
}

/** Our FIN counted in the send queue's sequence numbers (and in SIOCOUTQ). */
export function finQueued(state: number): boolean {
  return state === S.FIN_WAIT1;
}

/**
 * The send queue lengths without our FIN: SIOCOUTQ counts it; SIOCOUTQNSD too
 * while it is unsent (it is the last sequence number: anything unsent means it
 * is). The image's outq_seq keeps it (criu's numbers).
 */
export function withoutFin(state: number, outq: number, unsq: number): { outq: number; unsq: number } {
  if (!finQueued(state)) return { outq, unsq };
  return { outq: Math.max(0, outq - 1), unsq: Math.max(0, unsq - 1) };
}

/** Where the send queue starts: before its data, and before our FIN. */
export function sendQueueStart(state: number, e: Msg<'tcp_stream_entry'>): number {
  return (e.outq_seq - e.outq_len - (finQueued(state) ? 1 : 0)) | 0;
}

/**
 * Put our FIN back on a connection rebuilt ESTABLISHED (our copy `fd`, still
 * in repair mode, queues and windows restored). Sent before the dump (nothing
 * unsent): queued as sent, so nothing leaves now (the retransmit timer sends
 * it again); else queued after the unsent data, as it was.
 */
export function restoreFin(fd: number, state: number, unsent: number, what: string): void {
  if (!finQueued(state)) return;
  if (unsent === 0) setQueue(fd, QUEUE.SEND);
  const r = sysTry('shutdown', fd, SHUT.WR);
  if (unsent === 0) setQueue(fd, QUEUE.NO);
  if (r < 0) throw new StasisError(ErrorCodes.RESTORE_FAILED, `${what}: cannot queue its FIN again (shutdown errno ${-r})`);
}

function setQueue(fd: number, q: number): void {
  const b = Buffer.alloc(4);
  b.writeInt32LE(q);
  sys('setsockopt', fd, SOL.TCP, TCP.REPAIR_QUEUE, addressOf(b), 4, 0, 'TCP_REPAIR_QUEUE');
}
