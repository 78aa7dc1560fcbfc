// The memory unit's part in pre-dumps and incremental dumps: the parent
// opened before the freeze, tracking read and re-armed in the parasite
// session (track.ts), which pages come from the parent, and what a dump
// writes for the next one (parent link and pin, tracking record).
import * as fs from 'node:fs';
import { readMaps } from '../../proc/proc';
import { PARENT_LINK, PARENT_PIN, pinOf } from '../../images/chain';
import type { RemoteTask } from '../../compel/remote';
import type { DumpCtx, ProcessDump } from '../../unit/dump-ctx';
import { classify, parseVmFlags, type ClassifiedVma } from './classify';
import { openParentForDump, parentPages, fromParent, type ParentImages } from './parent';
import { trackInTask, trackable, formatTrack, TRACK_FILE, type ProcTracking } from './track';
import type { MmFacts, PagePlan } from './dump';

const PAGE_SHIFT = 12n;

export interface MemoryDump {
  facts: Map<number, MmFacts>;
  parent?: ParentImages;
}

export function prepareTracking(ctx: DumpCtx, st: MemoryDump): void {
  if (ctx.opts.prevImagesDir !== undefined) st.parent = openParentForDump(ctx.opts.dir, ctx.opts.prevImagesDir);
}

/** In the parasite session: read the tracking the parent armed, arm anew or close, as the dump asks. */
export function trackParasite(ctx: DumpCtx, pd: ProcessDump, t: RemoteTask, st: MemoryDump): ProcTracking {
  const { preDump, leaveRunning, trackMem } = ctx.opts;
  const layout = () => ({
    vmas: readMaps(pd.pid).map(classify),
    vmFlags: () => parseVmFlags(fs.readFileSync(`/proc/${pd.pid}/smaps`, 'utf8')),
  });
  const tr = trackInTask(t, pd, layout, {
    parent: st.parent?.track.get(pd.vpid),
    arm: !!preDump || (leaveRunning && !!trackMem),
    goesOn: !!preDump || leaveRunning,
  });
  pd.ownFds = tr.own;
  return tr;
}

/**
 * For each tracked VMA: its present pages (as scanned) and the parent's pages
 * in it. A present page not written since the parent armed tracking, and in
 * the parent's images, is taken from the parent.
 */
export function pagePlan(parent: ParentImages | undefined, pd: ProcessDump, vmas: ClassifiedVma[], track: ProcTracking | undefined): PagePlan {
  const written = track?.written;
  if (!parent || !written) return {};
  const have = parentPages(parent, pd.vpid);
  if (!have) return {};
  const plan: PagePlan['tracked'] = new Map();
  for (const cv of vmas) {
    const regions = written.get(cv.vma.start);
    if (!trackable(cv) || !regions) continue;
    plan.set(cv.vma.start, { regions, parent: fromParent(have, Number(cv.vma.start >> PAGE_SHIFT), Number(cv.vma.end >> PAGE_SHIFT), []) });
  }
  return { tracked: plan };
}

/** The parent link and pin, and the tracking this dump armed. */
export function writeTracking(ctx: DumpCtx, st: MemoryDump): void {
  if (st.parent) {
    ctx.out.symlink(PARENT_LINK, st.parent.link);
    const pin = pinOf(st.parent.dir);
    if (pin) writeRaw(ctx, PARENT_PIN, Buffer.from(pin + '\n', 'latin1'));
  }
  const armed = [...st.facts.values()].flatMap((f) => (f.track?.armed ? [f.track.armed] : []));
  if (armed.length) writeRaw(ctx, TRACK_FILE, formatTrack(armed));
}

function writeRaw(ctx: DumpCtx, name: string, data: Buffer): void {
  const f = ctx.out.create(name);
  try { f.write(data); } finally { f.close(); }
}
