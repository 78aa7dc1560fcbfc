// What a kind of open file (regular file, pipe, eventfd, socket...) provides:
// its dump half, turning an fd into its file_entry member, and its restore
// half, making a new fd in the task. Registered in registry.ts.
import type * as fs from 'node:fs';
import type { FdInfo } from '../proc/proc';
import type { DumpCtx } from '../dump/context';
import type { RestoreCtx, TaskRestore } from '../restore/context';
import type { Entry, Decoded } from '../images/image';

/** An fd being dumped. */
export interface FdDesc {
  pid: number;
  fd: number;
  /** readlink of /proc/PID/fd/N */
  link: string;
  st: fs.Stats;
  info: FdInfo;
  /** File status flags (O_ACCMODE, O_APPEND, O_NONBLOCK...), without O_CLOEXEC. */
  flags: number;
}

export interface FileKind {
  name: string;
  /** fd_types value */
  type: number;
  /** file_entry member holding this kind's entry */
  field: string;
  match(d: FdDesc): boolean;
  /** The member entry for a new file id. */
  dump(ctx: DumpCtx, d: FdDesc, id: number): Entry;
  /** Checked while loading, before anything is created. */
  check?(e: Decoded, where: string, skipFileCheck: boolean): void;
  /** A new fd in the task for this file. */
  open(ctx: RestoreCtx, tr: TaskRestore, e: Decoded): number;
  /** Once every fd of the task is in place (epoll needs its targets). */
  finish?(ctx: RestoreCtx, tr: TaskRestore, e: Decoded, fd: number): void;
}

/** fown_entry with no owner (F_SETOWN not used). */
export const NO_FOWN = { uid: 0, euid: 0, signum: 0, pid_type: 0, pid: 0 };

/** "key:\tvalue" lines of fdinfo beyond pos/flags/mnt_id/ino. */
export function fdinfoField(d: FdDesc, key: string): string {
  const v = d.info.extra.get(key);
  if (v === undefined) throw new Error(`fd ${d.fd} of pid ${d.pid}: fdinfo has no '${key}'`);
  return v;
}
