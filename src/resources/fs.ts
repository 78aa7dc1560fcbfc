// fs-PID.img: cwd, root and umask.
import * as fs from 'node:fs';
import { abi } from '../sys';
import { writeImage } from '../images/image';
import type { DumpCtx, ProcessDump } from '../dump/context';
import { regFileEntry } from './regfile';

export function dumpFs(ctx: DumpCtx, pd: ProcessDump): void {
  const dirFlags = abi.O.RDONLY | abi.O.DIRECTORY;
  const cwd = fs.readlinkSync(`/proc/${pd.pid}/cwd`);
  const root = fs.readlinkSync(`/proc/${pd.pid}/root`);
  const cwdId = regFileEntry(ctx, cwd, dirFlags, { statPath: `/proc/${pd.pid}/cwd` });
  const rootId = regFileEntry(ctx, root, dirFlags, { statPath: `/proc/${pd.pid}/root` });
  const umask = parseInt(pd.status.get('Umask') ?? '22', 8);
  writeImage(ctx.opts.dir, `fs-${pd.pid}.img`, 'FS', [['fs_entry', { cwd_id: cwdId, root_id: rootId, umask }]]);
}

// ---------------------------------------------------------------- restore

import type { RestoreCtx, TaskRestore } from '../restore/context';

export function restoreFs(ctx: RestoreCtx, tr: TaskRestore): void {
  const t = tr.task;
  const root = ctx.ckpt.files.get(tr.img.fs.root_id)!.reg.name as string;
  const cwd = ctx.ckpt.files.get(tr.img.fs.cwd_id)!.reg.name as string;
  if (root !== '/') t.call('chroot', t.putString(root));
  t.call('chdir', t.putString(cwd));
  t.call('umask', tr.img.fs.umask ?? 0o22);
}
