// Readers for /proc/PID/*: what the kernel tells any tracer without the
// task's help.
import * as fs from 'node:fs';

export interface Vma {
  start: bigint;
  end: bigint;
  prot: number; // PROT_* bits
  shared: boolean; // 's' in the perms column (MAP_SHARED)
  pgoff: bigint;
  dev: string; // "fd:01"
  inode: number;
  path: string; // file path, "[heap]", "[stack]", "[vdso]", "" for anonymous
  deleted: boolean; // path ends with " (deleted)"
}

export function parseMaps(text: string): Vma[] {
  const out: Vma[] = [];
  for (const line of text.split('\n')) {
    if (!line) continue;
    // start-end perms offset dev inode [path]; path may contain spaces.
    const m = /^([0-9a-f]+)-([0-9a-f]+) ([r-])([w-])([x-])([ps]) ([0-9a-f]+) ([0-9a-f]+:[0-9a-f]+) (\d+)\s*(.*)$/.exec(line);
    if (!m) throw new Error(`unparsable maps line: ${line}`);
    let path = m[10];
    let deleted = false;
    if (path.endsWith(' (deleted)')) { deleted = true; path = path.slice(0, -' (deleted)'.length); }
    out.push({
      start: BigInt('0x' + m[1]),
      end: BigInt('0x' + m[2]),
      prot: (m[3] === 'r' ? 1 : 0) | (m[4] === 'w' ? 2 : 0) | (m[5] === 'x' ? 4 : 0),
      shared: m[6] === 's',
      pgoff: BigInt('0x' + m[7]),
      dev: m[8],
      inode: Number(m[9]),
      path,
      deleted,
    });
  }
  return out;
}

export function readMaps(pid: number): Vma[] {
  return parseMaps(fs.readFileSync(`/proc/${pid}/maps`, 'utf8'));
}

/** /proc/PID/status as a key → value map. */
export function readStatus(pid: number): Map<string, string> {
  const m = new Map<string, string>();
  for (const line of fs.readFileSync(`/proc/${pid}/status`, 'utf8').split('\n')) {
    const i = line.indexOf(':');
    if (i > 0) m.set(line.slice(0, i), line.slice(i + 1).trim());
  }
  return m;
}

export interface Stat {
  pid: number; comm: string; state: string; ppid: number; pgrp: number; session: number;
  /** The controlling terminal's device number (0: none) and its foreground process group (-1: none). */
  ttyNr: number; tpgid: number;
  flags: number; startCode: bigint; endCode: bigint; startStack: bigint; startData: bigint;
  endData: bigint; startBrk: bigint; argStart: bigint; argEnd: bigint; envStart: bigint;
  envEnd: bigint; exitCode: number; nice: number; policy: number; rtPriority: number;
  /** Clock ticks after boot at which the process started (with the pid: which process this is). */
  startTime: bigint;
}

/** Resident pages of a process (/proc/PID/statm's second field); 0 if it cannot be read. */
export function residentPages(pid: number): number {
  try { return Number(fs.readFileSync(`/proc/${pid}/statm`, 'latin1').split(' ')[1]) || 0; } catch { return 0; }
}

/** /proc/PID/stat (or /proc/PID/task/TID/stat). */
export function readStat(pid: number, tid?: number): Stat {
  const text = fs.readFileSync(tid === undefined ? `/proc/${pid}/stat` : `/proc/${pid}/task/${tid}/stat`, 'utf8');
  // comm is in parentheses and may itself contain ") "; the last ')' ends it.
  const l = text.indexOf('('), r = text.lastIndexOf(')');
  const f = text.slice(r + 2).trim().split(' ');
  // f[0] is field 3 (state).
  const n = (i: number) => Number(f[i - 3]);
  const b = (i: number) => BigInt(f[i - 3]);
  return {
    pid: Number(text.slice(0, l).trim()), comm: text.slice(l + 1, r), state: f[0],
    ppid: n(4), pgrp: n(5), session: n(6), ttyNr: n(7), tpgid: n(8), flags: n(9), nice: n(19), policy: n(41), rtPriority: n(40),
    startCode: b(26), endCode: b(27), startStack: b(28), startData: b(45), endData: b(46),
    startBrk: b(47), argStart: b(48), argEnd: b(49), envStart: b(50), envEnd: b(51), exitCode: n(52), startTime: b(22),
  };
}

export const PF_KTHREAD = 0x00200000;

export function listTasks(pid: number): number[] {
  return fs.readdirSync(`/proc/${pid}/task`).map(Number).filter((n) => Number.isInteger(n)).sort((a, b) => a - b);
}

/** Children of every thread of `pid` (needs CONFIG_PROC_CHILDREN). */
export function listChildren(pid: number): number[] {
  const out: number[] = [];
  for (const tid of listTasks(pid)) {
    let text = '';
    try { text = fs.readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8'); } catch { continue; }
    for (const s of text.trim().split(/\s+/)) if (s) out.push(Number(s));
  }
  return out;
}

/** The task's auxiliary vector as 64-bit words (pairs of type, value, ending with AT_NULL). */
export function readAuxv(pid: number): bigint[] {
  const buf = fs.readFileSync(`/proc/${pid}/auxv`);
  const words: bigint[] = [];
  for (let i = 0; i + 8 <= buf.length; i += 8) words.push(buf.readBigUInt64LE(i));
  // Trim after the AT_NULL pair.
  for (let i = 0; i + 1 < words.length; i += 2) if (words[i] === 0n) return words.slice(0, i + 2);
  return words;
}

/** Parse a hex signal mask line of /proc/PID/status (SigBlk, SigIgn...). */
export function sigmaskFromStatus(status: Map<string, string>, key: string): bigint {
  const v = status.get(key);
  return v ? BigInt('0x' + v) : 0n;
}

export interface FdInfo { pos: bigint; flags: number; mntId: number; ino: number; extra: Map<string, string>; raw: string }
export function readFdInfo(pid: number, fd: number): FdInfo {
  return parseFdInfo(fs.readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8'));
}

/** /proc/PID/fdinfo/N text: pos, flags (octal), mnt_id, ino, and every other line by key. */
export function parseFdInfo(raw: string): FdInfo {
  const extra = new Map<string, string>();
  let pos = 0n, flags = 0, mntId = 0, ino = 0;
  for (const line of raw.split('\n')) {
    const i = line.indexOf(':');
    if (i <= 0) continue;
    const k = line.slice(0, i), v = line.slice(i + 1).trim();
    if (k === 'pos') pos = BigInt(v);
    else if (k === 'flags') flags = parseInt(v, 8);
    else if (k === 'mnt_id') mntId = Number(v);
    else if (k === 'ino') ino = Number(v);
    else extra.set(k, v);
  }
  return { pos, flags, mntId, ino, extra, raw };
}

export function listFds(pid: number): number[] {
  return fs.readdirSync(`/proc/${pid}/fd`).map(Number).sort((a, b) => a - b);
}

/**
 * pagemap entries for [start, end): one u64 per page. Bit 63 present,
 * bit 62 swapped, bit 61 file-page or shared-anon, bit 56 exclusively mapped.
 */
export const PM_PRESENT = 1n << 63n;
export const PM_SWAP = 1n << 62n;
export const PM_FILE = 1n << 61n;
/** A guard page (madvise MADV_GUARD_INSTALL, Linux 6.15 shows it): no page, a fault on access. */
export const PM_GUARD = 1n << 58n;
export function readPagemap(fd: number, start: bigint, end: bigint, into?: Buffer): Buffer {
  const n = Number((end - start) / 4096n);
  const buf = into && into.length >= n * 8 ? into.subarray(0, n * 8) : Buffer.alloc(n * 8);
  let off = 0;
  while (off < buf.length) {
    const got = fs.readSync(fd, buf, off, buf.length - off, Number(start / 4096n) * 8 + off);
    if (got <= 0) break;
    off += got;
  }
  return buf;
}

/** A "key:\tvalue" line of fdinfo beyond pos/flags/mnt_id/ino; throws if the kernel did not print it. */
export function fdinfoField(info: FdInfo, key: string, where: string): string {
  const v = info.extra.get(key);
  if (v === undefined) throw new Error(`${where}: fdinfo has no '${key}'`);
  return v;
}

/** The innermost value of a /proc status NS* line ("NSpid:\t31\t1" → 1): the id in the task's own pid namespace. */
export function innermostId(status: Map<string, string>, key: 'NSpid' | 'NStgid' | 'NSpgid' | 'NSsid'): number {
  const v = status.get(key);
  if (!v) throw new Error(`/proc status has no ${key}`);
  const parts = v.trim().split(/\s+/);
  return Number(parts[parts.length - 1]);
}
