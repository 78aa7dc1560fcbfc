// Terminals: ptys whose master is in the tree (both ends, their parameters,
// queued bytes, and the sessions' controlling terminals: dump.ts, restore.ts),
// the console and virtual consoles (re-opened by path), and the shell's
// terminal of a shell job (-j: shell-job.ts).
import * as fs from 'node:fs';
import { StasisError, ErrorCodes } from '../../errors';
import { FD_TYPES, TTY_TYPE } from '../../images/criu';
import { parts, type Msg } from '../../images/image';
import { defineFileUnit } from '../../unit/unit';
import type { Loading } from '../../unit/checkpoint';
import type { RestoreCtx, TaskRestore } from '../../unit/restore-ctx';
import { filesUnit } from '../files';
import { namespacesUnit } from '../ns/namespaces';
import { isTty } from './shell-job';
import { ttyKind, infoId } from './device';
import { newDumpState, dumpTtyFile, dumpTtys, releaseTtys, type TtyDumpState } from './dump';
import { openTty, takeCtty, setForeground, finishPtys, closePtys, type TtyLoaded, type TtyRestoreState } from './restore';

export { isTty };

function loadTtys(ld: Loading): TtyLoaded {
  const infos = new Map<number, Msg<'tty_info_entry'>>();
  const data = new Map<number, Buffer>();
  const file = ld.images.path('tty-info.img');
  if (ld.images.exists('tty-info.img')) {
    for (const i of ld.images.read('tty-info.img', 'TTY_INFO', 'tty_info_entry')) {
      if (infos.has(i.id)) throw new StasisError(ErrorCodes.BAD_IMAGE, `${file}: tty id ${i.id} listed twice`);
      if (i.type === TTY_TYPE.PTY && (!i.pty || (i.id !== infoId(i.pty.index, false) && i.id !== infoId(i.pty.index, true)))) {
        throw new StasisError(ErrorCodes.BAD_IMAGE, `${file}: pty entry ${i.id} without a matching index`);
      }
      if (![TTY_TYPE.PTY, TTY_TYPE.CTTY, TTY_TYPE.CONSOLE, TTY_TYPE.VT].includes(i.type as never)) {
        throw new StasisError(ErrorCodes.BAD_IMAGE, `${file}: tty ${i.id} of type ${i.type}, which stasis does not restore`);
      }
      infos.set(i.id, i);
    }
  }
  for (const i of infos.values()) {
    if (i.sid && !ld.processes.some((p) => p.pid === i.sid && p.sid === i.sid)) {
      throw new StasisError(ErrorCodes.BAD_IMAGE, `${file}: tty ${i.id} is the terminal of session ${i.sid}, which no process of the tree leads`);
    }
    if (i.type === TTY_TYPE.PTY) {
      const other = infos.get(i.id ^ 1);
      // A slave alone, without termios: hung up (its master was closed).
      const hung = !other && !i.termios && i.id === infoId(i.pty!.index, false) && !i.sid;
      if (!hung && (!other || !i.termios)) throw new StasisError(ErrorCodes.BAD_IMAGE, `${file}: pty ${i.pty!.index} lacks ${!other ? 'one of its ends' : 'its termios'}`);
    } else if (i.sid && ![...ld.loaded(filesUnit).files.values()].some((f) => f.type === FD_TYPES.TTY && f.tty!.tty_info_id === i.id)) {
      throw new StasisError(ErrorCodes.BAD_IMAGE, `${file}: terminal ${i.id} of session ${i.sid} is open in no file of files.img`);
    }
  }
  if (ld.images.exists('tty-data.img')) {
    for (const d of ld.images.read('tty-data.img', 'TTY_DATA', 'tty_data_entry')) {
      if (infos.get(d.tty_id)?.type !== TTY_TYPE.PTY) throw new StasisError(ErrorCodes.BAD_IMAGE, `${ld.images.path('tty-data.img')}: data for tty ${d.tty_id}, no pty of tty-info.img`);
      data.set(d.tty_id, d.data);
    }
  }
  return { infos, data };
}

/** The unit's loaded images and restore state, for the session leaders' step in tree.ts. */
export function ttyAfterSetsid(ctx: RestoreCtx, tr: TaskRestore): void {
  takeCtty(ctx, tr, ctx.loaded(ttyUnit), ctx.state(ttyUnit));
}

export const ttyUnit = defineFileUnit<'tty', TtyDumpState, TtyLoaded, TtyRestoreState>({
  name: 'terminal',
  dumpState: newDumpState,
  dumpPhases: [{
    name: 'ttys', after: ['files'],
    once(ctx, st) {
      dumpTtys(ctx, st);
      if (st.infos.size) ctx.write('tty-info.img', 'TTY_INFO', parts('tty_info_entry', [...st.infos.values()].sort((a, b) => a.id - b.id)));
      if (st.data.length) ctx.write('tty-data.img', 'TTY_DATA', parts('tty_data_entry', st.data));
    },
  }],
  beforeRelease: (_ctx, st, how) => releaseTtys(st, !(how.done && how.kill)),
    loadAfter: ['files'],
  load: loadTtys,
  validate(ld, l) {
    // A pty is made again at its index: refused before anything exists when the index is taken here
    // (in our devpts: a tree with a mount namespace of its own has its own).
    if (ld.loaded(namespacesUnit).has('mnt')) return;
    for (const i of l.infos.values()) {
      if (i.type === TTY_TYPE.PTY && i.id === infoId(i.pty!.index, true) && fs.existsSync(`/dev/pts/${i.pty!.index}`)) {
        throw new StasisError(ErrorCodes.BUSY, `${ld.images.path('tty-info.img')}: pty index ${i.pty!.index} is in use on this host (/dev/pts/${i.pty!.index} exists)`);
      }
    }
  },
  restoreState: () => ({ pairs: new Map() }),
  restorePhases: [
    // The groups exist (tree.ts), the leader has its terminal: the foreground group, by the leader.
    { name: 'tty-foreground', after: ['files'], each: (ctx, tr, l, st) => setForeground(ctx, tr, l, st) },
    { name: 'tty-finish', after: ['files', 'tty-foreground'], once: (_ctx, l, st) => finishPtys(l, st) },
  ],
  cleanup: (_ctx, st) => closePtys(st),
  file: {
    type: FD_TYPES.TTY,
    field: 'tty',
    match: (d) => d.st.isCharacterDevice() && (isTty(d.link) || ttyKind(d.st.rdev).kind !== 'other'),
    dump: (ctx, d, id, st) => dumpTtyFile(ctx, d, id, st),
    validate(e, where, ld, l) {
      // A terminal without a tty_info is a shell job's.
      const info = l.infos.get(e.tty_info_id);
      if (!info && !ld.opts.shellJob) throw new StasisError(ErrorCodes.USAGE, `${where} holds a shell job on a terminal: restore with -j/--shell-job`);
      if (info && (info.type === TTY_TYPE.CONSOLE || info.type === TTY_TYPE.VT)) {
        const files = ld.loaded(filesUnit).files;
        const path = files.get(e.regf_id ?? 0)?.reg?.name ?? '';
        let st: fs.Stats | undefined;
        try { st = fs.statSync(path); } catch { /* below */ }
        if (!st?.isCharacterDevice() || st.rdev !== info.rdev) throw new StasisError(ErrorCodes.FILE_CHANGED, `${where}: ${path} is no longer the terminal device it was`);
      }
    },
    open: (ctx, tr, e, st, l) => openTty(ctx, tr, e, st, l),
    describe: (e, files) => `terminal ${files.get(e.regf_id ?? 0)?.reg?.name ?? ''}`,
  },
});
