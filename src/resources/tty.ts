// Terminals, for shell jobs only (-j/--shell-job, as criu): a process started
// from a shell has the shell's terminal on its fds. The terminal is not the
// process's own: dump records which fds had it (tty_file_entry naming the
// device path), and restore gives them the terminal stasis itself runs on.
import * as fs from 'node:fs';
import { abi } from '../sys';
import { StasisError, ErrorCodes } from '../errors';
import { FD_TYPES, NO_FOWN } from '../images/criu';
import { defineFileUnit } from '../unit/unit';
import { regFileEntry } from './regfile';
import { fetchFd } from './files';

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

export const ttyUnit = defineFileUnit({
  name: 'terminal',
  file: {
    type: FD_TYPES.TTY,
    field: 'tty',
    match: (d) => d.st.isCharacterDevice() && isTty(d.link),
    dump(ctx, d, id) {
      if (!ctx.opts.shellJob) {
        throw new StasisError(ErrorCodes.UNSUPPORTED, `fd ${d.fd} of pid ${d.pid} is the terminal ${d.link}; dump a shell job with -j/--shell-job`);
      }
      return { id, tty_info_id: 0, flags: d.flags, fown: NO_FOWN, regf_id: regFileEntry(ctx, d.link, d.flags, { key: `tty:${d.link}` }) };
    },
    validate(_e, where, ld) {
      if (!ld.opts.shellJob) throw new StasisError(ErrorCodes.USAGE, `${where} holds a shell job on a terminal: restore with -j/--shell-job`);
    },
    open(_ctx, tr, e) {
      const fd = fetchFd(tr.task, process.pid, ourTerminalFd(e.flags));
      tr.task.call('fcntl', fd, F.SETFL, e.flags & (O.NONBLOCK | O.APPEND));
      return fd;
    },
    describe: (e, files) => `terminal ${files.get(e.regf_id ?? 0)?.reg?.name ?? ''}`,
  },
});
