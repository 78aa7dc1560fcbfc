// Pipes of ours, for talking to a helper program (nft) synchronously: pipe2,
// and a bounded wait for its output (poll).
import { sys, sysTry } from './call';
import { addressOf } from './native';
import { O, POLL, POLLFD, ERRNO, readI32s } from './abi';
import { SyscallError } from '../errors';

/** A pipe, both ends close-on-exec (a child gets only the end it is given as stdio). */
export function pipe(): { r: number; w: number } {
  const b = Buffer.alloc(8);
  sys('pipe2', addressOf(b), O.CLOEXEC);
  const [r, w] = readI32s(b, 2);
  return { r, w };
}

/** Wait up to `ms` for `fd` to have input (or its writer gone); false on timeout. */
export function waitReadable(fd: number, ms: number): boolean {
  const pfd = POLLFD.encode({ fd, events: POLL.IN });
  const end = Date.now() + ms;
  for (;;) {
    const r = sysTry('poll', addressOf(pfd), 1, Math.max(0, end - Date.now()));
    // A signal (SIGCHLD from a child or a tracee) is no answer: wait on.
    if (r === -ERRNO.EINTR) continue;
    if (r < 0) throw new SyscallError('poll', -r, `fd ${fd}`);
    return r > 0;
  }
}
