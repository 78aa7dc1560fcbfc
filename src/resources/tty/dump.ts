// Dump of terminals. A pty is carried when its master is held in the tree:
// its index, both ends' parameters (termios, locked termios, window size,
// lock, packet mode, exclusivity), the slave's owner, its session and
// foreground group (as controlling terminal), and the bytes queued in either
// direction. stasis reads all that on its own copy of the master
// (pidfd_getfd) and on a slave it opens from it (TIOCGPTPEER); the queues are
// taken by reading, so a dump that does not end with the tree killed puts
// them back. The console and virtual consoles are re-opened by path.
import * as fs from 'node:fs';
import { abi, sys, sysTry, addressOf, kcmp, ioctlInt, grabFd } from '../../sys';
import { listFds } from '../../proc/proc';
import { StasisError, ErrorCodes } from '../../errors';
import { NO_FOWN, TTY_TYPE } from '../../images/criu';
import type { Msg } from '../../images/schema';
import type { DumpCtx } from '../../unit/dump-ctx';
import type { FdDesc } from '../../unit/unit';
import { regFileEntry } from '../regfile';
import {
  ttyKind, infoId, ptyIndex, ptyLocked, setPtyLock, openPeer, ptySession, getTermios, getWinsize,
  drain, queueBytes, plainTermios, isCanonical, setTermios, TTY_INDEX,
} from './device';
import { shellJobEntry } from './shell-job';

const { O, F, TIOC, KCMP } = abi;

type Info = Msg<'tty_info_entry'>;

interface Master { pid: number; fd: number; lfd: number }

export interface TtyDumpState {
  /** Masters held in the tree, by pty index (found before any fd is dumped). */
  masters: Map<number, Master> | undefined;
  /** Slave fds dumped, to check they are of the same devpts as their master. */
  slaves: { pid: number; fd: number; index: number; dev: number }[];
  /** Indices of ptys whose slave is some process's controlling terminal. */
  infos: Map<number, Info>;
  data: Msg<'tty_data_entry'>[];
  /** Our fds (slaves opened from masters) to close when the tree is let go. */
  ours: number[];
  /** Puts the queued bytes back into live ptys (a dump that leaves the tree running). */
  writeback: (() => void)[];
}

export const newDumpState = (): TtyDumpState => ({ masters: undefined, slaves: [], infos: new Map(), data: [], ours: [], writeback: [] });

/** Every pty master held in the tree, by index (one open file description per index). */
function findMasters(ctx: DumpCtx, st: TtyDumpState): Map<number, Master> {
  if (st.masters) return st.masters;
  const m = new Map<number, Master>();
  st.masters = m;
  for (const pd of ctx.processes) {
    for (const fd of listFds(pd.pid)) {
      if (pd.ownFds?.includes(fd)) continue;
      let s: fs.Stats;
      try { s = fs.statSync(`/proc/${pd.pid}/fd/${fd}`); } catch { continue; }
      if (!s.isCharacterDevice() || ttyKind(s.rdev).kind !== 'master') continue;
      const lfd = grabFd(pd.pid, fd);
      const index = ptyIndex(lfd);
      const have = m.get(index);
      if (have) {
        sysTry('close', lfd);
        if (kcmp(have.pid, pd.pid, KCMP.FILE, have.fd, fd) !== 0) {
          throw new StasisError(ErrorCodes.UNSUPPORTED, `fd ${fd} of pid ${pd.pid} and fd ${have.fd} of pid ${have.pid} are two pty masters of index ${index} (ptys of different devpts instances); not supported`);
        }
        continue;
      }
      m.set(index, { pid: pd.pid, fd, lfd });
    }
  }
  return m;
}

const outsideJ = (d: FdDesc, what = d.link) => new StasisError(ErrorCodes.UNSUPPORTED, `fd ${d.fd} of pid ${d.pid} is the terminal ${what}; dump a shell job with -j/--shell-job`);

/** The tty_file_entry of one fd. */
export function dumpTtyFile(ctx: DumpCtx, d: FdDesc, id: number, st: TtyDumpState): Msg<'tty_file_entry'> {
  const { kind, index } = ttyKind(d.st.rdev);
  const masters = findMasters(ctx, st);
  const entry = (infoIdv: number) => ({ id, tty_info_id: infoIdv, flags: d.flags, fown: NO_FOWN, regf_id: regFileEntry(ctx, d.link, d.flags, { key: `tty:${id}` }) });
  switch (kind) {
    case 'master': {
      const lfd = grabFd(d.pid, d.fd);
      try { return entry(infoId(ptyIndex(lfd), true)); } finally { sysTry('close', lfd); }
    }
    case 'slave': {
      if (d.link.endsWith(' (deleted)') && isHungUp(d)) {
        // Its master was closed: the kernel hung it up (and removed its /dev/pts entry). A slave on its own.
        st.infos.set(infoId(index, false), { ...simpleInfo(infoId(index, false), TTY_TYPE.PTY, d.st.rdev), pty: { index } });
        return entry(infoId(index, false));
      }
      if (masters.has(index)) {
        st.slaves.push({ pid: d.pid, fd: d.fd, index, dev: d.st.dev });
        return entry(infoId(index, false));
      }
      break;
    }
    case 'ctty': {
      const ctty = ctx.processes.find((p) => p.pid === d.pid)!.stat.ttyNr;
      const k = ttyKind(ctty);
      if (k.kind === 'slave' && masters.has(k.index)) {
        if (!st.infos.has(infoId(TTY_INDEX.CTTY, false))) {
          st.infos.set(infoId(TTY_INDEX.CTTY, false), simpleInfo(infoId(TTY_INDEX.CTTY, false), TTY_TYPE.CTTY, d.st.rdev));
        }
        return entry(infoId(TTY_INDEX.CTTY, false));
      }
      break;
    }
    case 'console': case 'vt': {
      const iid = infoId(kind === 'console' ? TTY_INDEX.CONSOLE : TTY_INDEX.VT, false);
      const have = st.infos.get(iid);
      if (have && have.rdev !== d.st.rdev) {
        throw new StasisError(ErrorCodes.UNSUPPORTED, `fd ${d.fd} of pid ${d.pid}: ${d.link} is a second virtual console (${abi.devMajor(d.st.rdev)}:${abi.devMinor(d.st.rdev)}) in the tree; one is supported`);
      }
      st.infos.set(iid, simpleInfo(iid, kind === 'console' ? TTY_TYPE.CONSOLE : TTY_TYPE.VT, d.st.rdev));
      return entry(iid);
    }
    default: break;
  }
  if (!ctx.opts.shellJob) throw outsideJ(d);
  return shellJobEntry(ctx, d, id);
}

/** A terminal file the kernel hung up answers EIO to everything (TCGETS included). */
function isHungUp(d: FdDesc): boolean {
  const lfd = grabFd(d.pid, d.fd);
  try {
    const b = Buffer.alloc(abi.TERMIOS.size);
    return sysTry('ioctl', lfd, TIOC.TCGETS, addressOf(b)) === -abi.ERRNO.EIO;
  } finally {
    sysTry('close', lfd);
  }
}

function simpleInfo(id: number, type: number, rdev: number): Info {
  return { id, type, locked: false, exclusive: false, packet_mode: false, sid: 0, pgrp: 0, rdev };
}

const vpidOf = (ctx: DumpCtx, pid: number) => ctx.processes.find((p) => p.pid === pid)?.vpid;

/**
 * The controlling terminals of the tree's sessions: a session leader's must be
 * a pty of the tree, or a console or VT the tree has open (its tty_info gets
 * the session and foreground group), or the shell's terminal with -j; every
 * process of its session must have it too (children inherit it when forked).
 */
function checkCttys(ctx: DumpCtx, masters: Map<number, Master>, st: TtyDumpState): void {
  for (const pd of ctx.processes) {
    const leader = ctx.processes.find((p) => p.pid === pd.stat.session);
    if (!leader) continue; // a session from outside the tree: restored processes join stasis's
    const mine = pd.stat.ttyNr, theirs = leader.stat.ttyNr;
    const k = ttyKind(mine);
    const simple = mine ? [...st.infos.values()].find((i) => (i.type === TTY_TYPE.CONSOLE || i.type === TTY_TYPE.VT) && sameDev(i.rdev, mine)) : undefined;
    const inTree = (k.kind === 'slave' && masters.has(k.index)) || simple !== undefined;
    if (mine && !inTree && !ctx.opts.shellJob) {
      throw new StasisError(ErrorCodes.UNSUPPORTED, `pid ${pd.pid} has the controlling terminal ${ttyName(mine)}, which is neither a pty held in the dumped tree nor a console open in it; dump a shell job with -j/--shell-job`);
    }
    if (mine !== theirs && (inTree || ttyKind(theirs).kind !== 'other')) {
      throw new StasisError(ErrorCodes.UNSUPPORTED, `pid ${pd.pid} has ${mine ? `the controlling terminal ${ttyName(mine)}` : 'no controlling terminal'} while the leader ${leader.pid} of its session has ${theirs ? ttyName(theirs) : 'none'}; not supported`);
    }
    if (simple && pd === leader) {
      const g = ctx.processes.find((p) => p.stat.pgrp === pd.stat.tpgid);
      if (pd.stat.tpgid > 0 && !g) throw new StasisError(ErrorCodes.UNSUPPORTED, `pid ${pd.pid}: the foreground process group ${pd.stat.tpgid} of its terminal ${ttyName(mine)} is outside the dumped tree; not supported`);
      simple.sid = pd.vpid;
      simple.pgrp = g?.vpgid ?? 0;
    }
  }
}

const sameDev = (a: number, b: number) => abi.devMajor(a) === abi.devMajor(b) && abi.devMinor(a) === abi.devMinor(b);

function ttyName(rdev: number): string {
  const k = ttyKind(rdev);
  return k.kind === 'slave' ? `/dev/pts/${k.index}` : `${abi.devMajor(rdev)}:${abi.devMinor(rdev)}`;
}

/** Both ends of a pty whose master is in the tree: parameters, session, queued bytes. */
function dumpPty(ctx: DumpCtx, index: number, m: Master, st: TtyDumpState): void {
  const where = `pty /dev/pts/${index} (master fd ${m.fd} of pid ${m.pid})`;
  const locked = ptyLocked(m.lfd);
  const packet = ioctlInt(m.lfd, TIOC.GPKT, 'TIOCGPKT') !== 0;
  const { sid, pgrp } = ptySession(m.lfd);
  let vsid = 0, vpgrp = 0;
  if (sid) {
    vsid = vpidOf(ctx, sid) ?? 0;
    if (!vsid) throw new StasisError(ErrorCodes.UNSUPPORTED, `${where} is the controlling terminal of session ${sid}, whose leader is outside the dumped tree; not supported`);
    const g = ctx.processes.find((p) => p.stat.pgrp === pgrp);
    if (pgrp && !g) throw new StasisError(ErrorCodes.UNSUPPORTED, `${where}: its foreground process group ${pgrp} is outside the dumped tree; not supported`);
    vpgrp = g ? g.vpgid : 0;
  }
  // A slave of our own (a locked pty opens none: unlocked for that moment).
  if (locked) setPtyLock(m.lfd, false);
  let s: number;
  try { s = openPeer(m.lfd, O.RDWR | O.NONBLOCK); } finally { if (locked) setPtyLock(m.lfd, true); }
  st.ours.push(s);
  const sst = fs.fstatSync(s);
  for (const sl of st.slaves) {
    if (sl.index === index && sl.dev !== sst.dev) throw new StasisError(ErrorCodes.UNSUPPORTED, `fd ${sl.fd} of pid ${sl.pid}: /dev/pts/${index} of another devpts instance than the master of ${where}; not supported`);
  }
  const termios = getTermios(s), termiosLocked = getTermios(s, true), winsize = getWinsize(s);
  // Registered before anything is taken: what was taken goes back even if taking the rest fails.
  const q = { input: Buffer.alloc(0), output: Buffer.alloc(0) };
  st.writeback.push(() => queueBytes(m.lfd, s, termios, q.input, q.output));
  takeQueues(m, s, termios, packet, where, q);
  const { input, output } = q;
  const common = { locked, packet_mode: packet, sid: vsid, pgrp: vpgrp, termios, termios_locked: termiosLocked, winsize, pty: { index } };
  const mst = fs.statSync(`/proc/${m.pid}/fd/${m.fd}`);
  st.infos.set(infoId(index, false), {
    id: infoId(index, false), type: TTY_TYPE.PTY, exclusive: ioctlInt(s, TIOC.GEXCL, 'TIOCGEXCL') !== 0, ...common,
    rdev: sst.rdev, dev: sst.dev, uid: sst.uid, gid: sst.gid,
  });
  st.infos.set(infoId(index, true), {
    id: infoId(index, true), type: TTY_TYPE.PTY, exclusive: ioctlInt(m.lfd, TIOC.GEXCL, 'TIOCGEXCL') !== 0, ...common, rdev: mst.rdev, dev: mst.dev,
  });
  if (input.length) st.data.push({ tty_id: infoId(index, false), data: input });
  if (output.length) st.data.push({ tty_id: infoId(index, true), data: output });
}

/**
 * The bytes queued in both directions, taken: what the slave will read
 * (read from our slave with the line discipline switched to non-canonical
 * for the moment, so that a partial line comes too; switched back once
 * empty), and what the master will read (read from our copy of the master,
 * non-blocking for the moment).
 */
function takeQueues(m: Master, s: number, termios: Msg<'termios_entry'>, packet: boolean, where: string, q: { input: Buffer; output: Buffer }): void {
  const fl = sys('fcntl', m.lfd, F.GETFL);
  sys('fcntl', m.lfd, F.SETFL, fl | O.NONBLOCK);
  try {
    if (packet && ioctlInt(m.lfd, TIOC.INQ, 'FIONREAD') > 0) {
      throw new StasisError(ErrorCodes.UNSUPPORTED, `${where} is in packet mode with bytes queued for its master; not supported`);
    }
    if (!packet) q.output = drain(m.lfd);
  } finally {
    sys('fcntl', m.lfd, F.SETFL, fl);
  }
  if (isCanonical(termios)) {
    setTermios(s, plainTermios(termios, false));
    try { q.input = drain(s); } finally { setTermios(s, termios); }
  } else {
    q.input = drain(s);
  }
}

/** Once every fd is dumped: the ptys of the tree, the sessions' terminals; tty-info.img and tty-data.img. */
export function dumpTtys(ctx: DumpCtx, st: TtyDumpState): void {
  const masters = findMasters(ctx, st);
  checkCttys(ctx, masters, st);
  for (const [index, m] of masters) dumpPty(ctx, index, m, st);
}

/** A dump that does not end with the tree killed: the queued bytes go back, our fds are closed. */
export function releaseTtys(st: TtyDumpState, putBack: boolean): void {
  try {
    if (putBack) for (const w of st.writeback) w();
  } finally {
    for (const fd of st.ours) sysTry('close', fd);
    for (const m of st.masters?.values() ?? []) sysTry('close', m.lfd);
    st.ours = []; st.masters = undefined; st.writeback = [];
  }
}

