// The names of unix sockets bound to a path: the socket file's owner and
// mode (file_perms), and a name whose file is gone (deleted: the file was
// unlinked, maybe replaced by another, or its directory removed). Such a
// socket is bound to its name again at restore, so that others can connect
// to it, and its file then removed, whatever took the path put back.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { abi } from '../sys';
import { inBuf, type RemoteTask } from '../compel/remote';
import { StasisError, ErrorCodes } from '../errors';
import type { Msg } from '../images/schema';
import type { RestoreCtx } from '../unit/restore-ctx';
import type { UnixDiag } from '../proc/sockdiag';

const { AF } = abi;
type Usk = Msg<'unix_sk_entry'>;

export function sockaddrUn(name: Buffer): Buffer {
  const a = Buffer.alloc(2 + name.length);
  a.writeUInt16LE(AF.UNIX, 0);
  name.copy(a, 2);
  return a;
}

/** A path name as a string (abstract and empty names: undefined). */
function pathOf(name: Buffer): string | undefined {
  return name.length && name[0] !== 0 ? name.toString().replace(/\0+$/, '') : undefined;
}

/** The owner and mode of the socket's file, or that its file is gone. */
export function dumpNameState(pid: number, u: UnixDiag, what: string): Pick<Usk, 'file_perms' | 'deleted'> {
  const p = pathOf(u.name);
  if (p === undefined || !u.vfsIno) return {};
  let st: fs.Stats | undefined;
  try { st = fs.lstatSync(p.startsWith('/') ? `/proc/${pid}/root${p}` : `/proc/${pid}/cwd/${p}`); } catch { /* gone */ }
  if (st?.isSocket() && st.ino === u.vfsIno) return { file_perms: { mode: st.mode & 0o7777, uid: st.uid, gid: st.gid } };
  // Relative to the directory it was bound in, which may not be the cwd now.
  if (!p.startsWith('/')) throw new StasisError(ErrorCodes.UNSUPPORTED, `${what}: bound to the relative name ${p}, whose socket file is not in the current directory; not supported`);
  return { deleted: true };
}

/**
 * Bind fd to the entry's name. A socket file left at the path by the dumped
 * socket itself is removed first. For a name whose file was gone at dump,
 * whatever holds the path now is moved aside and missing directories made:
 * `done` (called once others have connected) removes the file and puts all
 * back. The socket file gets its owner and mode.
 */
export function bindName(ctx: RestoreCtx, t: RemoteTask, fd: number, e: Usk): () => void {
  const p = pathOf(e.name);
  const full = p === undefined ? '' : p.startsWith('/') ? ctx.fsRoot + p : `/proc/${t.pid}/cwd/${p}`;
  let aside: string | undefined, made: string | undefined;
  if (p !== undefined && !e.deleted) {
    try { if (fs.lstatSync(full).isSocket()) fs.unlinkSync(full); } catch { /* not there */ }
  } else if (p !== undefined) {
    made = fs.mkdirSync(path.dirname(full), { recursive: true });
    if (fs.existsSync(full) || isLink(full)) {
      aside = `${full}.stasis-${process.pid}`;
      fs.renameSync(full, aside);
    }
  }
  const undo = () => {
    if (p === undefined || !e.deleted) return;
    try { fs.unlinkSync(full); } catch { /* bind failed */ }
    if (aside) fs.renameSync(aside, full);
    if (made) removeMade(made, path.dirname(full));
  };
  if (e.name.length) {
    const a = sockaddrUn(e.name);
    try { t.call('bind', fd, inBuf(a), a.length); } catch (err) { undo(); throw err; }
  }
  if (p !== undefined && e.file_perms) {
    fs.lchownSync(full, e.file_perms.uid, e.file_perms.gid);
    fs.chmodSync(full, e.file_perms.mode);
  }
  return undo;
}

function isLink(p: string): boolean {
  try { return fs.lstatSync(p).isSymbolicLink(); } catch { return false; }
}

/** Remove the directories made for a deleted name: `dir` up to `top`, the first one made. */
function removeMade(top: string, dir: string): void {
  for (let d = dir; ; d = path.dirname(d)) {
    fs.rmdirSync(d);
    if (d === top || d === path.dirname(d)) break;
  }
}
