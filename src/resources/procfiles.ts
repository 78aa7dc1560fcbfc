// Open files of /proc that name a process of the tree — /proc/PID/stat of a
// child, /proc/self/maps, a namespace fd (/proc/self/ns/net, which reads back
// as "net:[INODE]") — re-opened by path once the tree exists again: with the
// same pids, the same path names the restored process. Before anything is
// created their existence can only be checked by shape (the same entry under
// /proc/self). Threads are made after files are opened: a file of a thread
// other than a leader is refused at dump.
import * as fs from 'node:fs';
import { abi } from '../sys';
import { StasisError, ErrorCodes } from '../errors';
import type { DumpCtx } from '../unit/dump-ctx';
import type { FdDesc } from '../unit/unit';
import type { ProcessImage } from '../unit/checkpoint';

const PROC_PID = /^\/proc\/(\d+)(?:\/task\/(\d+))?(\/.*)?$/;
const NS_LINK = /^([a-z_]+):\[(\d+)\]$/;

/** pid, thread id (as the path names them) and the rest of a /proc/PID[/task/TID]/... path. */
export function parseProcPath(path: string): { pid: number; tid?: number; rest: string } | undefined {
  const m = PROC_PID.exec(path);
  return m ? { pid: Number(m[1]), tid: m[2] === undefined ? undefined : Number(m[2]), rest: m[3] ?? '' } : undefined;
}

/** The names under /proc/PID/ns/ a namespace fd's link ("net:[…]") may come from. */
export function nsFileNames(link: string): string[] | undefined {
  const kind = NS_LINK.exec(link)?.[1];
  if (!kind) return undefined;
  return kind === 'pid' || kind === 'time' ? [kind, `${kind}_for_children`] : [kind];
}

function inode(path: string): number | undefined {
  try { return fs.statSync(path).ino; } catch { return undefined; }
}

function isNsfs(d: FdDesc): boolean {
  try { return fs.statfsSync(`/proc/${d.pid}/fd/${d.fd}`).type === abi.NSFS_MAGIC; } catch { return false; }
}

/**
 * The path a /proc file of the tree is re-opened by, undefined for a file
 * that is not one. A namespace fd: by its owner's own /proc/self/ns/X when
 * the owner lives there, else another process of the tree that does; refused
 * when none does.
 */
export function treeProcFile(ctx: DumpCtx, d: FdDesc): string | undefined {
  const what = `fd ${d.fd} of pid ${d.pid}`;
  const names = nsFileNames(d.link);
  if (names && isNsfs(d)) {
    for (const pd of [...ctx.processes].sort((a, b) => (b.pid === d.pid ? 1 : 0) - (a.pid === d.pid ? 1 : 0))) {
      for (const n of names) {
        if (inode(`/proc/${pd.pid}/ns/${n}`) === d.st.ino) return pd.pid === d.pid ? `/proc/self/ns/${n}` : `/proc/${pd.vpid}/ns/${n}`;
      }
    }
    throw new StasisError(ErrorCodes.UNSUPPORTED, `${what}: namespace file ${d.link} is of a namespace no process of the tree lives in; not supported`);
  }
  const p = parseProcPath(d.link);
  if (!p) return undefined;
  const owner = ctx.processes.find((pd) => pd.vpid === p.pid || [...pd.vtids.values()].includes(p.pid));
  if (!owner) return undefined;
  const tid = p.tid ?? p.pid;
  if (tid !== owner.vpid) throw new StasisError(ErrorCodes.UNSUPPORTED, `${what}: ${d.link} is a file of thread ${tid}, which is made after files are opened; not supported`);
  return d.link;
}

/**
 * Whether `name` is a /proc file of a process of the tree (checked by shape:
 * that entry exists in /proc/self); a thread's other than a leader is refused.
 */
export function checkTreeProcFile(name: string, where: string, processes: readonly ProcessImage[]): boolean {
  const p = name.startsWith('/proc/self/') ? { pid: -1, tid: undefined, rest: name.slice('/proc/self'.length) } : parseProcPath(name);
  if (!p) return false;
  if (p.pid !== -1) {
    const owner = processes.find((x) => x.threads.some((t) => t.tid === p.pid));
    if (!owner) return false;
    const tid = p.tid ?? p.pid;
    if (tid !== owner.pid) throw new StasisError(ErrorCodes.UNSUPPORTED, `${where}: ${name} is a file of thread ${tid}, made after files are opened; not supported`);
  }
  const first = p.rest.split('/')[1];
  if (first && !fs.existsSync(`/proc/self/${first}`)) throw new StasisError(ErrorCodes.FILE_CHANGED, `${where}: ${name}: there is no /proc/PID/${first} on this kernel`);
  return true;
}
