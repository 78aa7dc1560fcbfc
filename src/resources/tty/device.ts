// Terminal devices as stasis sees them from its own side: which kind a device
// number is, and the ioctls stasis runs on its own fds of a pty (a copy of the
// master taken with pidfd_getfd, a slave opened from it with TIOCGPTPEER):
// parameters, and the bytes queued in either direction, read and written back.
import { abi, sys, sysTry, addressOf, pollOne, ioctlInt, sleepSync } from '../../sys';
import { StasisError, ErrorCodes } from '../../errors';
import type { Msg } from '../../images/schema';

const { TIOC, TTY_DEV, TERMIOS, TERMIOS_L, WINSIZE, TIOCGWINSZ, O, ERRNO, POLL } = abi;

export type TtyKind = 'master' | 'slave' | 'ctty' | 'console' | 'vt' | 'other';

/** criu's tty_info ids: a pty's slave 2*index, its master 2*index+1; fixed indices for the others. */
export const TTY_INDEX = { CONSOLE: 1002, VT: 1004, CTTY: 1006, EXT: 1012 } as const;
/**
 * tty_info_id of a shell job's terminal (criu's index of external terminals):
 * it has no tty_info. Any id without one is taken so (older images wrote 0).
 */
export const SHELL_JOB_INFO_ID = TTY_INDEX.EXT * 2;

export function ttyKind(rdev: number): { kind: TtyKind; index: number } {
  const major = abi.devMajor(rdev), minor = abi.devMinor(rdev);
  if (major === TTY_DEV.AUX_MAJOR && minor === TTY_DEV.PTMX_MINOR) return { kind: 'master', index: -1 };
  if (major === TTY_DEV.AUX_MAJOR && minor === TTY_DEV.CTTY_MINOR) return { kind: 'ctty', index: TTY_INDEX.CTTY };
  if (major === TTY_DEV.AUX_MAJOR && minor === TTY_DEV.CONSOLE_MINOR) return { kind: 'console', index: TTY_INDEX.CONSOLE };
  if (major === TTY_DEV.VT_MAJOR && minor >= TTY_DEV.VT_MIN && minor <= TTY_DEV.VT_MAX) return { kind: 'vt', index: TTY_INDEX.VT };
  if (major >= TTY_DEV.PTS_MAJOR && major < TTY_DEV.PTS_MAJOR + TTY_DEV.PTS_MAJORS) {
    return { kind: 'slave', index: (major - TTY_DEV.PTS_MAJOR) * TTY_DEV.PTS_PER_MAJOR + minor };
  }
  return { kind: 'other', index: -1 };
}

export const infoId = (index: number, master: boolean) => index * 2 + (master ? 1 : 0);

export function ptyIndex(master: number): number { return ioctlInt(master, TIOC.GPTN, 'TIOCGPTN'); }
export function ptyLocked(master: number): boolean { return ioctlInt(master, TIOC.GPTLCK, 'TIOCGPTLCK') !== 0; }
export function setPtyLock(master: number, lock: boolean): void {
  const b = Buffer.alloc(4); b.writeInt32LE(lock ? 1 : 0);
  sys('ioctl', master, TIOC.SPTLCK, addressOf(b), 0, 0, 0, 'TIOCSPTLCK');
}

/** A slave of the pty of our master fd, opened anew (never our controlling terminal). */
export function openPeer(master: number, flags: number): number {
  return sys('ioctl', master, TIOC.GPTPEER, (flags & (O.ACCMODE | O.NONBLOCK)) | O.NOCTTY | O.CLOEXEC, 0, 0, 0, 'TIOCGPTPEER');
}

/** The session and foreground group of a pty (asked through its master: anyone may), 0 when none. */
export function ptySession(master: number): { sid: number; pgrp: number } {
  const b = Buffer.alloc(4);
  const sid = sysTry('ioctl', master, TIOC.GSID, addressOf(b)) < 0 ? 0 : b.readInt32LE(0);
  const pgrp = sysTry('ioctl', master, TIOC.GPGRP, addressOf(b)) < 0 ? 0 : b.readInt32LE(0);
  return { sid, pgrp };
}

type Termios = Msg<'termios_entry'>;
type Winsize = Msg<'winsize_entry'>;

export function getTermios(fd: number, locked = false): Termios {
  const b = Buffer.alloc(TERMIOS.size);
  sys('ioctl', fd, locked ? TIOC.GLCKTRMIOS : TIOC.TCGETS, addressOf(b), 0, 0, 0, locked ? 'TIOCGLCKTRMIOS' : 'TCGETS');
  const t = TERMIOS.decode(b);
  // criu writes c_ispeed/c_ospeed of glibc's struct, which TCGETS leaves zero.
  return { c_iflag: t.iflag, c_oflag: t.oflag, c_cflag: t.cflag, c_lflag: t.lflag, c_line: t.line, c_ispeed: 0, c_ospeed: 0, c_cc: [...t.cc] };
}

export function setTermios(fd: number, t: Termios, locked = false): void {
  const b = TERMIOS.encode({ iflag: t.c_iflag, oflag: t.c_oflag, cflag: t.c_cflag, lflag: t.c_lflag, line: t.c_line, cc: Buffer.from(t.c_cc ?? []) });
  sys('ioctl', fd, locked ? TIOC.SLCKTRMIOS : TIOC.TCSETS, addressOf(b), 0, 0, 0, locked ? 'TIOCSLCKTRMIOS' : 'TCSETS');
}

export function getWinsize(fd: number): Winsize {
  const b = Buffer.alloc(WINSIZE.size);
  sys('ioctl', fd, TIOCGWINSZ, addressOf(b), 0, 0, 0, 'TIOCGWINSZ');
  const w = WINSIZE.decode(b);
  return { ws_row: w.rows, ws_col: w.cols, ws_xpixel: w.xpixel, ws_ypixel: w.ypixel };
}

export function setWinsize(fd: number, w: Winsize): void {
  const b = WINSIZE.encode({ rows: w.ws_row, cols: w.ws_col, xpixel: w.ws_xpixel, ypixel: w.ws_ypixel });
  sys('ioctl', fd, TIOC.SWINSZ, addressOf(b), 0, 0, 0, 'TIOCSWINSZ');
}

export const inq = (fd: number) => ioctlInt(fd, TIOC.INQ, 'FIONREAD');

/**
 * Every byte the line discipline of `fd` holds, taken (fd non-blocking). A
 * poll with nothing readable makes the kernel push what is still in the
 * tty's flip buffers into the line discipline first, so an empty answer is
 * final.
 */
export function drain(fd: number): Buffer {
  const out: Buffer[] = [];
  const chunk = Buffer.alloc(4096);
  for (;;) {
    if (inq(fd) === 0 && !(pollOne(fd, POLL.IN, 0) & POLL.IN)) break;
    const n = sysTry('read', fd, addressOf(chunk), chunk.length);
    // EIO: the other end is closed (nothing more comes).
    if (n === -ERRNO.EAGAIN || n === -ERRNO.EIO || n === 0) break;
    if (n < 0) throw new StasisError(ErrorCodes.UNSUPPORTED, `cannot read the data queued in a terminal (errno ${-n})`);
    out.push(Buffer.from(chunk.subarray(0, n)));
  }
  return Buffer.concat(out);
}

/**
 * The termios the queued bytes are read and written with: no input or output
 * processing, no echo, no signals, no special characters (0 disables them),
 * canonical or not as given.
 */
export function plainTermios(t: Termios, canonical: boolean): Termios {
  return { ...t, c_iflag: 0, c_oflag: 0, c_lflag: canonical ? TERMIOS_L.ICANON : 0, c_cc: new Array(abi.KERNEL_NCCS).fill(0) };
}

export const isCanonical = (t: Termios) => (t.c_lflag & TERMIOS_L.ICANON) !== 0;

/**
 * Queue bytes on a pty through our master `m` and slave `s` (both ours):
 * `input` as if typed (the slave reads it), `output` as if the slave had
 * written it (the master reads it). The slave's termios is plain meanwhile
 * (no echo, no translation); the line discipline must have taken every byte
 * before `final` is set, so we wait until the slave sees them (a partial
 * last line of a canonical terminal is not counted: a poll pushes it).
 */
export function queueBytes(m: number, s: number, final: Termios, input: Buffer, output: Buffer): void {
  const canonical = isCanonical(final);
  setTermios(s, plainTermios(final, canonical));
  try {
    writeAll(m, input, 'master');
    writeAll(s, output, 'slave');
    const want = canonical ? input.lastIndexOf(0x0a) + 1 : input.length;
    const until = Date.now() + 10000;
    while (inq(s) < want) {
      if (Date.now() > until) throw new StasisError(ErrorCodes.RESTORE_FAILED, `a pty took only ${inq(s)} of ${want} queued bytes`);
      pollOne(s, POLL.IN, 1);
      sleepSync(1);
    }
    // Nothing readable yet (a lone partial line): the poll itself pushes the flip buffers.
    if (want === 0) pollOne(s, POLL.IN, 0);
  } finally {
    setTermios(s, final);
  }
}

function writeAll(fd: number, data: Buffer, end: string): void {
  let off = 0;
  while (off < data.length) {
    const n = sysTry('write', fd, addressOf(data) + BigInt(off), data.length - off);
    if (n === -ERRNO.EINTR) continue;
    if (n <= 0) throw new StasisError(ErrorCodes.RESTORE_FAILED, `cannot queue ${data.length} bytes into a pty through its ${end} (wrote ${off}, errno ${-n})`);
    off += n;
  }
}
