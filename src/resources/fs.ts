// fs-PID.img: cwd, root and umask.
import * as fs from 'node:fs';
import { abi } from '../sys';
import { cstr } from '../compel/remote';
import { parts, type Msg } from '../images/image';
import { FD_TYPES } from '../images/criu';
import { StasisError, ErrorCodes } from '../errors';
import { defineUnit } from '../unit/unit';
import { regFileEntry } from './regfile';
import { filesUnit, fileEntry } from './files';

const { O } = abi;

export const fsUnit = defineUnit({
  name: 'fs',
  dumpPhases: [{
    name: 'fs', after: ['parasite'], before: ['write-files'],
    each(ctx, pd) {
      const dirFlags = O.RDONLY | O.DIRECTORY;
      const cwd = fs.readlinkSync(`/proc/${pd.pid}/cwd`);
      const root = fs.readlinkSync(`/proc/${pd.pid}/root`);
      const cwdId = regFileEntry(ctx, cwd, dirFlags, { statPath: `/proc/${pd.pid}/cwd` });
      const rootId = regFileEntry(ctx, root, dirFlags, { statPath: `/proc/${pd.pid}/root` });
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
      const root = fileEntry(ctx, e.root_id).reg!.name;
      const cwd = fileEntry(ctx, e.cwd_id).reg!.name;
      if (root !== '/') t.call('chroot', cstr(root));
      t.call('chdir', cstr(cwd));
      t.call('umask', e.umask ?? 0o22);
    },
  }],
});
