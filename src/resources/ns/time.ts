// Time namespace of its own: CLOCK_MONOTONIC and CLOCK_BOOTTIME as the tree
// saw them at the dump (timens-ID.img, as criu); on restore the stub unshares
// a time namespace and we set its offsets so that both clocks carry on from
// those values (the time the tree was down is not counted), before the root
// is cloned into it. Offsets freeze once a task has entered the namespace.
import * as fs from 'node:fs';
import { abi, sys, addressOf } from '../../sys';
import { parts, type Msg } from '../../images/image';
import { StasisError, ErrorCodes } from '../../errors';
import { defineUnit } from '../../unit/unit';
import { namespacesUnit } from './namespaces';

const { CLONE, TIMESPEC, CLOCK } = abi;
const NS = 1_000_000_000n;

/** Offsets of a time namespace (/proc/PID/timens_offsets), in ns. */
export function parseTimensOffsets(text: string): { monotonic: bigint; boottime: bigint } {
  const out = { monotonic: 0n, boottime: 0n };
  for (const m of text.matchAll(/^(monotonic|boottime)\s+(-?\d+)\s+(\d+)/gm)) out[m[1] as 'monotonic' | 'boottime'] = BigInt(m[2]) * NS + BigInt(m[3]);
  return out;
}

function now(clock: number): bigint {
  const b = Buffer.alloc(TIMESPEC.size);
  sys('clock_gettime', clock, addressOf(b));
  const t = TIMESPEC.decode(b);
  return t.sec * NS + t.nsec;
}

const split = (ns: bigint): Msg<'timespec'> => ({ tv_sec: ns / NS, tv_nsec: ns % NS });
const join = (t: Msg<'timespec'>) => t.tv_sec * NS + t.tv_nsec;

/** "sec nsec" with nsec in [0, 1e9), for a signed offset in ns. */
function offsetText(ns: bigint): string {
  let sec = ns / NS, nsec = ns % NS;
  if (nsec < 0n) { nsec += NS; sec -= 1n; }
  return `${sec} ${nsec}`;
}

export const timeUnit = defineUnit({
  name: 'time',
  dumpPhases: [{
    name: 'time', after: ['namespaces'], before: ['parasite'],
    once(ctx) {
      if (!ctx.state(namespacesUnit).own.has('time')) return;
      const root = ctx.processes[0];
      const ours = parseTimensOffsets(fs.readFileSync('/proc/self/timens_offsets', 'utf8'));
      const theirs = parseTimensOffsets(fs.readFileSync(`/proc/${root.pid}/timens_offsets`, 'utf8'));
      // Their clocks = the host's + their offsets = ours - our offsets + their offsets.
      const clock = (id: number, k: 'monotonic' | 'boottime') => split(now(id) - ours[k] + theirs[k]);
      ctx.write(`timens-${root.ids.time_ns_id}.img`, 'TIMENS', parts('timens_entry', [{ monotonic: clock(CLOCK.MONOTONIC, 'monotonic'), boottime: clock(CLOCK.BOOTTIME, 'boottime') }]));
    },
  }],
  loadAfter: ['namespaces'],
  load: (ld) => (ld.loaded(namespacesUnit).has('time') ? ld.images.one(`timens-${ld.processes[0].ids.time_ns_id}.img`, 'TIMENS', 'timens_entry') : undefined),
  restorePhases: [{
    name: 'time', stage: 'stub', after: ['namespaces'],
    once(ctx, e) {
      if (!e) return;
      const stub = ctx.stub!;
      stub.call('unshare', CLONE.NEWTIME);
      const ours = parseTimensOffsets(fs.readFileSync('/proc/self/timens_offsets', 'utf8'));
      const off = (id: number, k: 'monotonic' | 'boottime', want: Msg<'timespec'>) => join(want) - (now(id) - ours[k]);
      const text = `monotonic ${offsetText(off(CLOCK.MONOTONIC, 'monotonic', e.monotonic))}\nboottime ${offsetText(off(CLOCK.BOOTTIME, 'boottime', e.boottime))}\n`;
      try {
        fs.writeFileSync(`/proc/${stub.pid}/timens_offsets`, text);
      } catch (err) {
        throw new StasisError(ErrorCodes.RESTORE_FAILED, `cannot set the time namespace's offsets (${text.trim().replace(/\n/g, ', ')}): ${(err as NodeJS.ErrnoException).code}`);
      }
    },
  }],
});
