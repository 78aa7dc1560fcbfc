// A killed dumper never harms its target: SIGKILL `stasis dump` at random
// moments (uniform over the time from its seize to its end) of dumps of a
// single-threaded (victim) and a multi-threaded (threads) fixture, with and
// without -R, and count the targets harmed: dead, still traced or stopped,
// another signal mask, another set of mappings, or a failed self-check.
//
//   npm run build && node dist/bench/kill-dumper.js [--kills N] [--seed N] [--kinds victim-R,victim,threads-R,threads]
//
// --kills is the total, shared among the kinds. Prints harmed/total.
import * as fs from 'node:fs';
import { parseArgs } from 'node:util';
import { initHarness, tmpDir } from '../test/harness';
import { killCampaign, type CampaignResult } from '../test/harness/kill';

const { values } = parseArgs({ options: { kills: { type: 'string', default: '1000' }, seed: { type: 'string' }, kinds: { type: 'string', default: 'victim-R,victim,threads-R,threads' } } });
const KILLS = Number(values.kills);
const SEED = values.seed !== undefined ? Number(values.seed) : Math.floor(Math.random() * 2 ** 31);
if (!(KILLS >= 4)) throw new Error('--kills must be at least 4');

async function main(): Promise<void> {
  initHarness();
  const dir = tmpDir('kill-bench');
  const kinds = values.kinds.split(',').map((k) => {
    const m = /^(victim|threads)(-R)?$/.exec(k);
    if (!m) throw new Error(`unknown kind ${k}`);
    return { fixture: m[1] as 'victim' | 'threads', leaveRunning: m[2] !== undefined };
  });
  const results: { kind: string; r: CampaignResult }[] = [];
  const t0 = Date.now();
  try {
    for (const [i, k] of kinds.entries()) {
      const kills = Math.floor(KILLS / kinds.length) + (i < KILLS % kinds.length ? 1 : 0);
      const r = await killCampaign({ ...k, kills, seed: SEED + i, dir: `${dir}/d`, log: (l) => console.log(l), progress: 25 });
      results.push({ kind: `${k.fixture}${k.leaveRunning ? ' -R' : ''}`, r });
      console.log(`${results[i].kind}: ${r.harmed.length} harmed in ${r.kills} kills (${r.completed} after the dump was complete), ${r.passed} self-check(s) passed`);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  const harmed = results.reduce((a, x) => a + x.r.harmed.length, 0);
  const total = results.reduce((a, x) => a + x.r.kills, 0);
  for (const { kind, r } of results) for (const h of r.harmed) console.log(`  ${kind}: ${h}`);
  console.log(`harmed/total: ${harmed}/${total} (seed ${SEED}, ${((Date.now() - t0) / 1000).toFixed(0)} s)`);
}

main().catch((e) => { console.error(e); process.exit(1); });
