// A tracer that dies at a chosen moment of a parasite session, for
// test/kill-windows.test.ts:
//
//   node parasite-dier.js --die-at WHERE PID
//
// It freezes PID, runs a session up to WHERE, prints "AT WHERE" and SIGKILLs
// itself, leaving the task to the kernel (and to our code in it). Without
// --die-at it does nothing (the test runner may load it as a file).
import * as fs from 'node:fs';
import { freezeProcess } from '../../src/freeze';
import { Parasite } from '../../src/compel/parasite';
import { RemoteTask } from '../../src/compel/remote';
import { ptrace, wait4, abi } from '../../src/sys';

export const DIE_AT = [
  /** prepared: the task on our code in its freeze stop, no call yet */
  'prepared',
  /** scratch mapped */
  'scratch',
  /** a few calls made: the task in a syscall-exit stop on our code */
  'calls',
  /** a batch of calls set up (code, registers, mask) in the task, not resumed */
  'batch-set',
  /** a batch running (or done and stopped at its signal, not yet seen) */
  'batch-running',
  /** the task stopped at the signal that ends a batch */
  'batch-stopped',
  /** registers set for a call, before it is resumed */
  'call-set',
  /** stopped at the entry of a call */
  'call-entry',
  /** another thread on the second block while the leader waits on the first */
  'thread',
  /** cure: interrupt queued, own mask back, registers still ours */
  'cure-mask',
  /** cure: own mask and registers back, not yet resumed into the interrupt stop */
  'cure-regs',
  /** scratch unmapped, not cured */
  'unmapped',
] as const;
export type DieAt = (typeof DIE_AT)[number];

function die(where: DieAt): never {
  fs.writeSync(1, `AT ${where}\n`);
  process.kill(process.pid, 'SIGKILL');
  throw new Error('unreachable');
}

function run(where: DieAt, pid: number): void {
  const frozen = freezeProcess(pid);
  const p = Parasite.prepare(pid);
  if (where === 'prepared') die(where);
  const scratch = p.mapScratch(abi.PAGE_SIZE);
  if (where === 'scratch') die(where);
  for (let i = 0; i < 3; i++) p.syscall('getppid');
  if (where === 'calls') die(where);
  if (where === 'batch-set' || where === 'batch-running' || where === 'batch-stopped') {
    p.onBatch = (phase) => { if (phase === where) die(where); };
    new RemoteTask(p, scratch, abi.PAGE_SIZE).callMany([['getppid'], ['getpid'], ['gettid']]);
    throw new Error(`no batch ran in ${pid} (it catches every signal a batch may end with?)`);
  }
  const regs = ptrace.getRegs(pid);
  const call = { ...regs, rip: p.codeAddress, rax: BigInt(abi.SYS.getppid), orig_rax: 0xffffffffffffffffn };
  if (where === 'call-set') { ptrace.setRegs(pid, call); die(where); }
  if (where === 'call-entry') {
    ptrace.setRegs(pid, call);
    ptrace.syscallStep(pid);
    wait4(pid);
    die(where);
  }
  if (where === 'thread') {
    const tid = frozen.threads.find((t) => t !== pid);
    if (tid === undefined) throw new Error(`process ${pid} has one thread`);
    const tp = p.forThread(tid);
    tp.syscall('gettid');
    // Calls asked of a thread while the leader holds its block: one by one,
    // never a batch in the scratch page the leader's block unmaps if we die.
    tp.onBatch = () => { throw new Error(`a batch ran in thread ${tid} while the leader held its block`); };
    new RemoteTask(tp, scratch, abi.PAGE_SIZE).callMany([['gettid'], ['getpid']]);
    die(where);
  }
  if (where === 'cure-mask' || where === 'cure-regs') {
    // As cure() does it: the scratch page goes first.
    p.unmapScratch(scratch, abi.PAGE_SIZE);
    ptrace.interrupt(pid);
    ptrace.setSigMask(pid, p.mask);
    if (where === 'cure-regs') ptrace.setRegs(pid, p.regs);
    die(where);
  }
  p.unmapScratch(scratch, abi.PAGE_SIZE);
  die(where);
}

const i = process.argv.indexOf('--die-at');
if (i >= 0) run(process.argv[i + 1] as DieAt, Number(process.argv[i + 2]));
