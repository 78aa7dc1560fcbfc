// Per-call cost of a remote syscall: a seized victim, a parasite session with a
// scratch page, N calls of getppid (no buffers) and N of rt_sigaction (an out
// buffer read back). Prints microseconds per call; never asserts.
//
//   npm run build && node dist/bench/parasite-call.js [--calls N] [--rounds N]
import { parseArgs } from 'node:util';
import { Fixture, initHarness } from '../test/harness';
import { freezeProcess, release } from '../src/freeze';
import { Parasite } from '../src/compel/parasite';
import { RemoteTask, outBuf, SCRATCH_LEN } from '../src/compel/remote';
import { abi } from '../src/sys';

const { values } = parseArgs({ options: { calls: { type: 'string', default: '2000' }, rounds: { type: 'string', default: '5' } } });
const CALLS = Number(values.calls);
const ROUNDS = Number(values.rounds);

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

async function main(): Promise<void> {
  initHarness();
  const fx = await Fixture.start('victim');
  const plain: number[] = [], withBuf: number[] = [], session: number[] = [];
  try {
    for (let r = 0; r < ROUNDS; r++) {
      const frozen = freezeProcess(fx.pid);
      try {
        const s0 = process.hrtime.bigint();
        const p = Parasite.prepare(fx.pid);
        try {
          const scratch = p.syscall('mmap', 0, SCRATCH_LEN, abi.PROT.READ | abi.PROT.WRITE, abi.MAP.PRIVATE | abi.MAP.ANONYMOUS, -1, 0);
          const t = new RemoteTask(p, scratch, SCRATCH_LEN);
          session.push(Number(process.hrtime.bigint() - s0) / 1e3);
          let t0 = process.hrtime.bigint();
          for (let i = 0; i < CALLS; i++) t.call('getppid');
          plain.push(Number(process.hrtime.bigint() - t0) / 1e3 / CALLS);
          t0 = process.hrtime.bigint();
          for (let i = 0; i < CALLS; i++) t.call('rt_sigaction', abi.SIG.SIGUSR1, 0, outBuf(abi.KSIGACTION.size), 8);
          withBuf.push(Number(process.hrtime.bigint() - t0) / 1e3 / CALLS);
          p.syscall('munmap', scratch, SCRATCH_LEN);
        } finally {
          p.cure();
        }
      } finally {
        release(frozen);
      }
    }
    console.log(`remote call cost over ${ROUNDS} rounds of ${CALLS} calls (median; µs per call)`);
    console.log(`  getppid (no buffer):        ${median(plain).toFixed(1)}`);
    console.log(`  rt_sigaction (out buffer):  ${median(withBuf).toFixed(1)}`);
    console.log(`  prepare + scratch mmap:     ${median(session).toFixed(1)}`);
    // The victim's self-check wants a few full, undisturbed sleeps.
    await fx.waitCounter(fx.counter() + 3n, 10000);
    const { log } = await fx.terminate();
    if (!/^PASS$/m.test(log)) throw new Error(`victim failed its self-check:\n${log}`);
  } finally {
    await fx.kill();
  }
}

main().catch((e) => { console.error(e); process.exit(1); });
