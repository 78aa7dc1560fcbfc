// Per-call cost of a remote syscall: a seized victim, a parasite session with a
// scratch page, N calls of getppid (no buffers) and N of rt_sigaction (an out
// buffer read back), for each way of running a call, interleaved round by round
// so that a busy machine weighs on both alike. Prints the median microseconds
// per call; never asserts timings. At the end the victim must pass its
// self-check (nothing it could notice happened to it).
//
//   npm run build && node dist/bench/parasite-call.js [--calls N] [--rounds N]
import { parseArgs } from 'node:util';
import { Fixture, initHarness } from '../test/harness';
import { freezeProcess, release } from '../src/freeze';
import { Parasite, type TrapMode } from '../src/compel/parasite';
import { RemoteTask, outBuf, SCRATCH_LEN } from '../src/compel/remote';
import { abi } from '../src/sys';

const { values } = parseArgs({ options: { calls: { type: 'string', default: '1000' }, rounds: { type: 'string', default: '9' } } });
const CALLS = Number(values.calls);
const ROUNDS = Number(values.rounds);
if (!(CALLS > 0) || !(ROUNDS > 0)) throw new Error('--calls and --rounds must be positive numbers');

/** int3: `syscall; int3` with registers and mask put back after every call (the former default). */
const MODES: TrapMode[] = ['int3', 'self-restoring'];

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

const us = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e3;

interface Sample { plain: number; withBuf: number; session: number }

function round(pid: number, mode: TrapMode): Sample {
  const frozen = freezeProcess(pid);
  try {
    const s0 = process.hrtime.bigint();
    const p = Parasite.prepare(pid, { mode });
    try {
      const scratch = p.mapScratch(SCRATCH_LEN);
      const t = new RemoteTask(p, scratch, SCRATCH_LEN);
      let t0 = process.hrtime.bigint();
      for (let i = 0; i < CALLS; i++) t.call('getppid');
      const plain = us(t0) / CALLS;
      t0 = process.hrtime.bigint();
      for (let i = 0; i < CALLS; i++) t.call('rt_sigaction', abi.SIG.SIGUSR1, 0, outBuf(abi.KSIGACTION.size), 8);
      const withBuf = us(t0) / CALLS;
      p.unmapScratch(scratch, SCRATCH_LEN);
      p.cure();
      return { plain, withBuf, session: us(s0) - (plain + withBuf) * CALLS };
    } finally {
      p.cure();
    }
  } finally {
    release(frozen);
  }
}

async function main(): Promise<void> {
  initHarness();
  const fx = await Fixture.start('victim');
  const samples = new Map<TrapMode, Sample[]>(MODES.map((m) => [m, []]));
  try {
    for (let r = 0; r < ROUNDS; r++) for (const m of MODES) samples.get(m)!.push(round(fx.pid, m));
    console.log(`remote call cost, median of ${ROUNDS} rounds of ${CALLS} calls each (µs)`);
    console.log(`${'mode'.padEnd(16)}${'getppid'.padStart(10)}${'rt_sigaction'.padStart(14)}${'session'.padStart(10)}`);
    for (const [m, s] of samples) {
      console.log(`${m.padEnd(16)}${median(s.map((x) => x.plain)).toFixed(1).padStart(10)}${median(s.map((x) => x.withBuf)).toFixed(1).padStart(14)}${median(s.map((x) => x.session)).toFixed(0).padStart(10)}`);
    }
    console.log('session: prepare + scratch mmap + munmap + cure');
    // The victim's self-check wants a few full, undisturbed sleeps.
    await fx.waitCounter(fx.counter() + 3n, 10000);
    const { log } = await fx.terminate();
    if (!/^PASS$/m.test(log)) throw new Error(`victim failed its self-check:\n${log}`);
    console.log('victim: PASS');
  } finally {
    await fx.kill();
  }
}

main().catch((e) => { console.error(e); process.exit(1); });
