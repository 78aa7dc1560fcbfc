// UTS namespace of its own: the hostname and domain name, utsns-ID.img;
// set in the root before its children exist.
import { abi } from '../../sys';
import { outBuf, inBuf } from '../../compel/remote';
import { parts, type Msg } from '../../images/image';
import { StasisError, ErrorCodes } from '../../errors';
import { defineUnit } from '../../unit/unit';
import { namespacesUnit } from './namespaces';

const { NEW_UTSNAME } = abi;

function cString(b: Buffer): string {
  const end = b.indexOf(0);
  return b.subarray(0, end < 0 ? b.length : end).toString('utf8');
}

export const utsUnit = defineUnit({
  name: 'uts',
  dumpState: () => ({ entry: undefined as Msg<'utsns_entry'> | undefined }),
  parasite(ctx, pd, t, st) {
    if (pd !== ctx.processes[0] || !ctx.state(namespacesUnit).own.has('uts')) return;
    const u = outBuf(NEW_UTSNAME.size);
    t.call('uname', u);
    const v = NEW_UTSNAME.decode(u.data);
    st.entry = { nodename: cString(v.nodename), domainname: cString(v.domainname) };
  },
  dumpPhases: [{
    name: 'uts', after: ['parasite'],
    once(ctx, st) { if (st.entry) ctx.write(`utsns-${ctx.processes[0].ids.uts_ns_id}.img`, 'UTSNS', parts('utsns_entry', [st.entry])); },
  }],
  loadAfter: ['namespaces'],
  load(ld) {
    if (!ld.loaded(namespacesUnit).has('uts')) return undefined;
    const e = ld.images.one(`utsns-${ld.processes[0].ids.uts_ns_id}.img`, 'UTSNS', 'utsns_entry');
    for (const [k, v] of Object.entries(e)) {
      if (Buffer.byteLength(v as string) > 64) throw new StasisError(ErrorCodes.BAD_IMAGE, `${ld.images.path(`utsns-${ld.processes[0].ids.uts_ns_id}.img`)}: ${k} longer than 64 bytes`);
    }
    return e;
  },
  restorePhases: [{
    name: 'uts', stage: 'root',
    once(ctx, e) {
      if (!e) return;
      const t = ctx.tasks.values().next().value!.task;
      const put = (call: 'sethostname' | 'setdomainname', s: string) => { const b = Buffer.from(s); t.call(call, inBuf(b), b.length); };
      put('sethostname', e.nodename);
      put('setdomainname', e.domainname);
    },
  }],
});
