// The owner and mode of a bound unix socket's file (file_perms_entry): bind()
// at restore makes the file as the restorer, with the task's umask, so a
// peer of another uid may be refused (connect needs write permission on it).
import * as fs from 'node:fs';
import type { Msg } from '../images/schema';

/** Where a bound name is, seen from outside: relative names are relative to the cwd. */
function pathOf(pid: number, name: Buffer, root: string): string | undefined {
  if (!name.length || name[0] === 0) return undefined; // unbound or abstract
  const p = name.toString().replace(/\0+$/, '');
  return p.startsWith('/') ? `${root}${p}` : `/proc/${pid}/cwd/${p}`;
}

/** The socket file's owner and mode, if it is still there. */
export function dumpSocketPerms(pid: number, name: Buffer): Msg<'file_perms_entry'> | undefined {
  const p = pathOf(pid, name, `/proc/${pid}/root`);
  if (!p) return undefined;
  let st: fs.Stats;
  try { st = fs.lstatSync(p); } catch { return undefined; }
  return st.isSocket() ? { mode: st.mode & 0o7777, uid: st.uid, gid: st.gid } : undefined;
}

/** The path a restored socket binds `name` at (for the stale file to go first), seen from the restorer. */
export function socketPath(pid: number, name: Buffer, fsRoot: string): string | undefined {
  return pathOf(pid, name, fsRoot);
}

/** Give the freshly bound file its owner and mode back. */
export function restoreSocketPerms(pid: number, name: Buffer, fsRoot: string, perms: Msg<'file_perms_entry'> | undefined): void {
  const p = pathOf(pid, name, fsRoot);
  if (!p || !perms) return;
  fs.lchownSync(p, perms.uid, perms.gid);
  fs.chmodSync(p, perms.mode);
}
