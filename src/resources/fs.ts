// fs-PID.img: cwd, root and umask.
import { cstr } from '../compel/remote';
import { parts, type Msg } from '../images/image';
import { FD_TYPES } from '../images/criu';
import { StasisError, ErrorCodes } from '../errors';
import { defineUnit } from '../unit/unit';
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
  restorePhases: [{
    name: 'fs',
    each(ctx, tr, l) {
      const t = tr.task;
      const e = l.get(tr.img.pid)!;
      // A deleted one comes back as the ghost made for it (removed again at the end).
      const path = (id: number) => { const r = fileEntry(ctx, id).reg!; return ghostFor(ctx, r)?.slice(ctx.fsRoot.length) ?? r.name; };
      const root = path(e.root_id);
      // Both paths as seen from the root it has now: the cwd first, as it may be outside the new root.
      t.call('chdir', cstr(path(e.cwd_id)));
      if (root !== '/') t.call('chroot', cstr(root));
      t.call('umask', e.umask ?? 0o22);
    },
  }],
});
