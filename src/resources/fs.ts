// fs-PID.img: cwd, root and umask.
import { cstr } from '../compel/remote';
import { parts, type Msg } from '../images/image';
import { FD_TYPES } from '../images/criu';
import { StasisError, ErrorCodes } from '../errors';
import { defineUnit } from '../unit/unit';
import type { RestoreCtx } from '../unit/restore-ctx';
import { dirEntry, ghostFor } from './regfile';
import { filesUnit, fileEntry } from './files';


export const fsUnit = defineUnit({
  name: 'fs',
  dumpPhases: [{
    name: 'fs', after: ['parasite'], before: ['write-files'],
    each(ctx, pd) {
      const cwdId = dirEntry(ctx, pd.pid, 'cwd');
      const rootId = dirEntry(ctx, pd.pid, 'root');
      const umask = parseInt(pd.status.get('Umask') ?? '22', 8);
      ctx.write(`fs-${pd.vpid}.img`, 'FS', parts('fs_entry', [{ cwd_id: cwdId, root_id: rootId, umask }]));
    },
  }],
  loadAfter: ['files'],
  load(ld) {
    const { files } = ld.loaded(filesUnit);
    const out = new Map<number, Msg<'fs_entry'>>();
    for (const p of ld.processes) {
      const file = `fs-${p.pid}.img`;
      const e = ld.images.one(file, 'FS', 'fs_entry');
      for (const id of [e.cwd_id, e.root_id]) {
        if (files.get(id)?.type !== FD_TYPES.REG) throw new StasisError(ErrorCodes.BAD_IMAGE, `${ld.images.path(file)}: names file id ${id}, not a path in files.img`);
      }
      out.set(p.pid, e);
    }
    return out;
  },
  restorePhases: [
    {
      // The cwd before anything is opened, as paths were read from outside any chroot.
      name: 'fs',
      each(ctx, tr, l) {
        const e = l.get(tr.img.pid)!;
        tr.task.call('chdir', cstr(dirPath(ctx, e.cwd_id)));
        tr.task.call('umask', e.umask ?? 0o22);
      },
    },
    {
      // The root once every path is open (a file of the task may lie outside its root,
      // as may its cwd, which chroot leaves where it is).
      name: 'chroot', after: ['fs', 'files', 'files-cleanup'], before: ['threads'],
      each(ctx, tr, l) {
        const root = dirPath(ctx, l.get(tr.img.pid)!.root_id);
        if (root !== '/') tr.task.call('chroot', cstr(root));
      },
    },
  ],
});

/** A directory's path for the task: a deleted one comes back as the ghost made for it (removed again at the end). */
function dirPath(ctx: RestoreCtx, id: number): string {
  const r = fileEntry(ctx, id).reg!;
  return ghostFor(ctx, r)?.slice(ctx.fsRoot.length) ?? r.name;
}
