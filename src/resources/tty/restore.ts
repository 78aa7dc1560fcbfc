// Restore of terminals. A pty of the tree is made again at its index: the
// first task that needs it opens /dev/ptmx (again, holding the others, until
// the index is the one dumped; an index taken on this host is refused), and
// stasis keeps a copy of the master and a slave of its own to set the
// parameters and queue the bytes from outside. A session leader whose
// controlling terminal it was takes it (TIOCSCTTY) right after its setsid,
// before it forks: its session's processes inherit it as they did; the
// foreground group is set once the groups exist. Fds get the master (the
// same open file description) or a slave opened from it (TIOCGPTPEER).
import { abi, sys, sysTry, addressOf, grabFd } from '../../sys';
import { StasisError, ErrorCodes } from '../../errors';
import { TTY_TYPE, FD_TYPES } from '../../images/criu';
import type { Msg } from '../../images/schema';
import type { RestoreCtx, TaskRestore } from '../../unit/restore-ctx';
import { inBuf } from '../../compel/remote';
import { giveFd } from '../../compel/give-fd';
import { fileEntry, filesUnit } from '../files';
import { infoId, ptyIndex, setPtyLock, openPeer, setTermios, setWinsize, getTermios, queueBytes } from './device';
import { shellJobOpen } from './shell-job';

const { O, TIOC } = abi;

type Info = Msg<'tty_info_entry'>;

export interface TtyLoaded {
  infos: Map<number, Info>;
  data: Map<number, Buffer>;
}

interface Pair { index: number; m: number; s: number; masterUsed?: boolean; hung?: boolean }

export interface TtyRestoreState { pairs: Map<number, Pair> }

/** Most /dev/ptmx opens to reach an index. */
const MAX_PTY_OPENS = 4096;

/** The pty of `index`, made by task `tr` if it does not exist yet, with its parameters and queued bytes. */
function pairFor(tr: TaskRestore, index: number, l: TtyLoaded, st: TtyRestoreState): Pair {
  const have = st.pairs.get(index);
  if (have) return have;
  const t = tr.task;
  const held: number[] = [];
  // A hung-up slave shows no index (its /dev/pts entry is gone): any pty does.
  const hung = !l.infos.has(infoId(index, true));
  let m = -1;
  try {
    for (let i = 0; i < MAX_PTY_OPENS && m < 0; i++) {
      const fd = t.open('/dev/ptmx', O.RDWR | O.NOCTTY | O.CLOEXEC);
      const ours = grabFd(t.pid, fd);
      t.call('close', fd);
      const got = ptyIndex(ours);
      if (got === index || hung) {
        m = ours;
      } else {
        held.push(ours);
        if (got > index) throw new StasisError(ErrorCodes.RESTORE_FAILED, `pty index ${index} (/dev/pts/${index}) is taken on this host`);
      }
    }
  } finally {
    for (const fd of held) sysTry('close', fd);
  }
  if (m < 0) throw new StasisError(ErrorCodes.RESTORE_FAILED, `pty index ${index}: not reached in ${MAX_PTY_OPENS} opens of /dev/ptmx`);
  const slave = l.infos.get(infoId(index, false))!, master = l.infos.get(infoId(index, true));
  let s = -1;
  try {
    setPtyLock(m, false);
    s = openPeer(m, O.RDWR | O.NONBLOCK);
    if (!master) {
      // A hung-up slave: its files are opened, then the master closed (finishPtys) hangs them up again.
      const p = { index, m, s, hung: true };
      st.pairs.set(index, p);
      return p;
    }
    if (slave.uid !== undefined && slave.gid !== undefined) sys('fchown', s, slave.uid, slave.gid, 0, 0, 0, `/dev/pts/${index}`);
    if (slave.termios_locked) setLockedTermios(s, slave.termios_locked, index);
    if (slave.winsize) setWinsize(s, slave.winsize);
    if (slave.termios) {
      queueBytes(m, s, slave.termios, l.data.get(slave.id) ?? Buffer.alloc(0), l.data.get(master!.id) ?? Buffer.alloc(0));
    }
    if (slave.packet_mode) {
      const one = Buffer.alloc(4); one.writeInt32LE(1);
      sys('ioctl', m, TIOC.PKT, addressOf(one), 0, 0, 0, 'TIOCPKT');
    }
  } catch (e) {
    sysTry('close', m);
    if (s >= 0) sysTry('close', s);
    throw e;
  }
  const p = { index, m, s };
  st.pairs.set(index, p);
  return p;
}

/** Locked termios need CAP_SYS_ADMIN; without it, only what is already there is accepted. */
function setLockedTermios(s: number, want: Msg<'termios_entry'>, index: number): void {
  try {
    setTermios(s, want, true);
  } catch (e) {
    const now = getTermios(s, true);
    if (JSON.stringify({ ...now, c_ispeed: 0, c_ospeed: 0 }) !== JSON.stringify({ ...want, c_ispeed: 0, c_ospeed: 0 })) {
      throw new StasisError(ErrorCodes.RESTORE_FAILED, `pty /dev/pts/${index}: cannot set its locked termios: ${(e as Error).message}`);
    }
  }
}

/** The terminal (a pty's slave, a console or VT) of the session `tr` leads, if any. */
function cttyOf(tr: TaskRestore, l: TtyLoaded): Info | undefined {
  if (tr.img.sid !== tr.img.pid) return undefined;
  return [...l.infos.values()].find((i) => i.sid === tr.img.pid &&
    ((i.type === TTY_TYPE.PTY && i.id === infoId(i.pty!.index, false)) || i.type === TTY_TYPE.CONSOLE || i.type === TTY_TYPE.VT));
}

/** A new fd of the leader's terminal in its task (a pty's slave, or the console or VT by its path). */
function openCtty(ctx: RestoreCtx, tr: TaskRestore, info: Info, l: TtyLoaded, st: TtyRestoreState): number {
  const t = tr.task;
  if (info.type !== TTY_TYPE.PTY) {
    const f = [...ctx.loaded(filesUnit).files.values()].find((x) => x.type === FD_TYPES.TTY && x.tty!.tty_info_id === info.id)!;
    return t.open(fileEntry(ctx, f.tty!.regf_id!).reg!.name, (f.tty!.flags & O.ACCMODE) | O.NOCTTY | O.CLOEXEC);
  }
  const m = giveFd(t, pairFor(tr, info.pty!.index, l, st).m);
  try { return t.callNum('ioctl', m, TIOC.GPTPEER, O.RDWR | O.NOCTTY | O.CLOEXEC); } finally { t.call('close', m); }
}

/** Right after a session leader's setsid, before it forks: its controlling terminal. */
export function takeCtty(ctx: RestoreCtx, tr: TaskRestore, l: TtyLoaded, st: TtyRestoreState): void {
  const info = cttyOf(tr, l);
  if (!info) return;
  const s = openCtty(ctx, tr, info, l, st);
  try { tr.task.call('ioctl', s, TIOC.SCTTY, 0); } finally { tr.task.call('close', s); }
}

/** Once the process groups exist: the foreground group of the leader's terminal (its own group is already). */
export function setForeground(ctx: RestoreCtx, tr: TaskRestore, l: TtyLoaded, st: TtyRestoreState): void {
  const info = cttyOf(tr, l);
  if (!info || !info.pgrp || info.pgrp === tr.img.pgid) return;
  const s = openCtty(ctx, tr, info, l, st);
  try {
    const g = Buffer.alloc(4); g.writeInt32LE(info.pgrp);
    tr.task.call('ioctl', s, TIOC.SPGRP, inBuf(g));
  } finally {
    tr.task.call('close', s);
  }
}

/** A new fd in the task for a terminal file. */
export function openTty(ctx: RestoreCtx, tr: TaskRestore, e: Msg<'tty_file_entry'>, st: TtyRestoreState, l: TtyLoaded): number {
  const info = l.infos.get(e.tty_info_id);
  if (!info) return shellJobOpen(tr, e);
  const t = tr.task;
  let fd: number;
  if (info.type === TTY_TYPE.PTY) {
    const p = pairFor(tr, info.pty!.index, l, st);
    if (info.id === infoId(p.index, true)) {
      if (p.masterUsed) throw new StasisError(ErrorCodes.RESTORE_FAILED, `pty /dev/pts/${p.index}: two open files of its master`);
      p.masterUsed = true;
      fd = giveFd(t, p.m);
      t.call('fcntl', fd, abi.F.SETFL, e.flags & (O.NONBLOCK | O.APPEND));
      return fd;
    }
    const s = openPeer(p.m, e.flags);
    try { fd = giveFd(t, s); } finally { sysTry('close', s); }
  } else {
    // The controlling terminal (it is set: the session leader took it before forking), the console, a VT.
    const path = info.type === TTY_TYPE.CTTY ? '/dev/tty' : fileEntry(ctx, e.regf_id!).reg!.name;
    fd = t.open(path, (e.flags & (O.ACCMODE | O.NONBLOCK)) | O.NOCTTY | O.CLOEXEC);
  }
  t.call('fcntl', fd, abi.F.SETFL, e.flags & (O.NONBLOCK | O.APPEND));
  return fd;
}

/** Every fd is in place: exclusive mode and the lock back, our slaves closed (then the ptys are as the tree left them). */
export function finishPtys(l: TtyLoaded, st: TtyRestoreState): void {
  for (const p of [...st.pairs.values()]) {
    if (p.hung) {
      sysTry('close', p.s);
      sysTry('close', p.m);
      st.pairs.delete(p.index);
      continue;
    }
    const slave = l.infos.get(infoId(p.index, false))!, master = l.infos.get(infoId(p.index, true))!;
    if (slave.exclusive) sys('ioctl', p.s, TIOC.EXCL, 0, 0, 0, 0, 'TIOCEXCL');
    if (master.exclusive) sys('ioctl', p.m, TIOC.EXCL, 0, 0, 0, 0, 'TIOCEXCL');
    sysTry('close', p.s);
    p.s = -1;
    if (slave.locked) setPtyLock(p.m, true);
  }
}

export function closePtys(st: TtyRestoreState): void {
  for (const p of st.pairs.values()) {
    if (p.s >= 0) sysTry('close', p.s);
    sysTry('close', p.m);
  }
  st.pairs.clear();
}
