// Terminals of shell jobs (-j/--shell-job, as criu): a process started from a
// shell has the shell's terminal on its fds. The terminal is not the
// process's own: dump records which fds had it (tty_file_entry naming
// the device path, with no tty_info), and restore gives them the terminal
// stasis itself runs on.
import * as fs from 'node:fs';
import { abi } from '../../sys';
import { StasisError, ErrorCodes } from '../../errors';
import { NO_FOWN } from '../../images/criu';
import type { Msg } from '../../images/schema';
import type { DumpCtx } from '../../unit/dump-ctx';
import type { TaskRestore } from '../../unit/restore-ctx';
import type { FdDesc } from '../../unit/unit';
import { regFileEntry } from '../regfile';
import { fetchFd } from '../files';
import { SHELL_JOB_INFO_ID } from './device';

const { O, F } = abi;

export function isTty(link: string): boolean {
  return /^\/dev\/(pts\/\d+|tty\w*|console)$/.test(link);
}

/** One of our own fds 0..2 on a terminal, preferring one with the access the task had. */
function ourTerminalFd(flags: number): number {
  const order = (flags & O.ACCMODE) === O.RDONLY ? [0, 1, 2] : [1, 2, 0];
  for (const fd of order) {
    try { if (isTty(fs.readlinkSync(`/proc/self/fd/${fd}`))) return fd; } catch { /* closed */ }
  }
  throw new StasisError(ErrorCodes.RESTORE_FAILED, 'restoring a shell job (-j) needs stasis to run on a terminal, and none of its fds 0-2 is one');
}

/** The shell's terminal on fd `d` (not the tree's: no tty_info). */
export function shellJobEntry(ctx: DumpCtx, d: FdDesc, id: number): Msg<'tty_file_entry'> {
  return { id, tty_info_id: SHELL_JOB_INFO_ID, flags: d.flags, fown: NO_FOWN, regf_id: regFileEntry(ctx, d.link, d.flags, { key: `tty:${d.link}` }) };
}

export function shellJobOpen(tr: TaskRestore, e: Msg<'tty_file_entry'>): number {
  const fd = fetchFd(tr.task, process.pid, ourTerminalFd(e.flags));
  tr.task.call('fcntl', fd, F.SETFL, e.flags & (O.NONBLOCK | O.APPEND));
  return fd;
}
