// The restore stub is a program of ours run from a memfd, not a file a
// restored process could map: `sleep` (the former stub's own binary), a bash
// loop calling sleep (parent and child) and a Node.js process (the binary
// stasis runs on) are dumped, restored and go on. A `stasis restore` killed
// early leaves no stub and no half-made process behind.
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawn } from 'node:child_process';
import {
  initHarness, tmpDir, waitFor, waitGone, descendantsOf, cmdline, procState, reapZombies, runStasis, describeCli,
  restoreDetached, STASIS, tracerPid, type Fixture,
} from './harness';
import { startProgram, dumpOk, dumpKillRestore } from './net-helpers';
import { readImage } from '../src/images/image';
import { stubElf, STUB_BASE } from '../src/restore/stub-elf';
import { tryKill, abi } from '../src/sys';

let root: string;
const started: Fixture[] = [];

before(() => {
  initHarness();
  root = tmpDir('stub');
});

after(async () => {
  for (const fx of started) await fx.kill();
  fs.rmSync(root, { recursive: true, force: true });
});

const exe = (pid: number) => fs.readlinkSync(`/proc/${pid}/exe`);
const lines = (file: string) => (fs.existsSync(file) ? fs.readFileSync(file, 'utf8').split('\n').filter(Boolean).length : 0);

async function start(name: string, argv: (dir: string) => string[]): Promise<Fixture> {
  const fx = await startProgram(name, argv);
  started.push(fx);
  return fx;
}

test('the stub image: one executable PT_LOAD holding the whole file, a non-executable stack, our pid and a syscall; int3', () => {
  const { image, trampoline, entry } = stubElf(4242);
  const eh = abi.ELF64_EHDR.decode(image);
  assert.deepEqual(eh.ident.subarray(0, 4), abi.ELF_MAGIC);
  assert.equal(eh.ident[4], abi.ELFCLASS64);
  assert.equal(eh.type, abi.ET.EXEC);
  assert.equal(eh.machine, abi.EM_X86_64);
  assert.equal(eh.phnum, 2);
  assert.equal(eh.entry, entry);
  const ph = [0, 1].map((i) => abi.ELF64_PHDR.decode(image, Number(eh.phoff) + i * eh.phentsize));
  assert.deepEqual([ph[0].type, ph[0].flags, ph[0].offset, ph[0].vaddr, ph[0].filesz, ph[0].memsz],
    [abi.PT.LOAD, abi.PF.R | abi.PF.X, 0n, STUB_BASE, BigInt(image.length), BigInt(image.length)]);
  assert.deepEqual([ph[1].type, ph[1].flags], [abi.PT.GNU_STACK, abi.PF.R | abi.PF.W]);
  assert.ok(entry >= STUB_BASE + BigInt(abi.ELF64_EHDR.size + 2 * abi.ELF64_PHDR.size) && entry < STUB_BASE + BigInt(image.length));
  const at = Number(trampoline - STUB_BASE);
  assert.deepEqual(image.subarray(at, at + 3), abi.SYSCALL_INT3);
  // cmp $4242, %eax appears twice (before and after PR_SET_PDEATHSIG).
  const cmp = Buffer.from([0x3d, 0x92, 0x10, 0, 0]);
  let count = 0;
  for (let i = image.indexOf(cmp); i >= 0; i = image.indexOf(cmp, i + 1)) count++;
  assert.equal(count, 2);
  assert.notDeepEqual(stubElf(4243).image, image, 'the pid is part of the image');
});

test('setsid sleep 1000: dumped, restored, still sleeping under its own exe', async () => {
  const fx = await start('sleep', () => ['/usr/bin/sleep', '1000']);
  await waitFor('sleep exec', () => exe(fx.pid) === '/usr/bin/sleep');
  const { restore } = await dumpKillRestore(fx, path.join(root, 'sleep'));
  assert.equal(restore.status, 0, describeCli(restore));
  assert.equal(exe(fx.pid), '/usr/bin/sleep');
  assert.equal(cmdline(fx.pid), '/usr/bin/sleep 1000');
  await waitFor('sleeping', () => procState(fx.pid) === 'S');
  tryKill(fx.pid, abi.SIG.SIGTERM);
  assert.deepEqual(await fx.reap(), { kind: 'signaled', pid: fx.pid, signal: abi.SIG.SIGTERM, core: false });
});

test('a bash loop calling sleep, dumped with its sleep child: restored, both under their own exe, the loop goes on', async () => {
  const fx = await start('bashloop', (dir) => ['/usr/bin/bash', '-c', `while :; do echo x >> ${dir}/out; /usr/bin/sleep 1; done`]);
  const out = path.join(fx.dir, 'out');
  await waitFor('the loop writing', () => lines(out) >= 1);
  // The freeze nearly always finds bash waiting for a sleep; if not, again (on the restored one).
  let tree: { pid: number; ppid: number }[] = [];
  for (let i = 0; i < 5 && tree.length !== 2; i++) {
    const dir = path.join(root, `bash${i}`);
    const before = descendantsOf();
    dumpOk(fx.pid, dir);
    tree = readImage(dir, 'pstree.img', 'PSTREE', 'pstree_entry').map((e) => ({ pid: e.pid, ppid: e.ppid }));
    await fx.reap();
    await waitGone([...before, ...tree.map((t) => t.pid)]);
    restoreDetached(dir);
    fx.restored();
  }
  assert.equal(tree.length, 2, 'bash and its sleep child');
  assert.equal(tree[1].ppid, fx.pid);
  assert.equal(exe(fx.pid), '/usr/bin/bash');
  const child = tree[1].pid;
  if (fs.existsSync(`/proc/${child}`)) assert.equal(exe(child), '/usr/bin/sleep');
  const n0 = lines(out);
  await waitFor('the loop going on', () => lines(out) >= n0 + 2, 10000);
  // The loop's current sleep (a child of bash) goes too: orphaned, it would
  // be ours (we are the subreaper) and seen by the next test as a leftover.
  const kids = descendantsOf().filter((p) => p !== fx.pid);
  tryKill(fx.pid, abi.SIG.SIGKILL);
  for (const p of kids) tryKill(p, abi.SIG.SIGKILL);
  await fx.reap();
  await waitFor('the loop and its sleep gone', () => { reapZombies(); return descendantsOf().length === 0; });
});

test('a Node.js process (exe: the binary stasis runs on): dumped, restored, its timer goes on', async () => {
  const fx = await start('nodeproc', (dir) => [process.execPath, '-e', `setInterval(() => require('fs').appendFileSync(${JSON.stringify(path.join(dir, 'out'))}, 'x\\n'), 50)`]);
  const out = path.join(fx.dir, 'out');
  await waitFor('node writing', () => lines(out) >= 2, 10000);
  assert.equal(exe(fx.pid), fs.realpathSync(process.execPath));
  await dumpKillRestore(fx, path.join(root, 'node'));
  assert.equal(exe(fx.pid), fs.realpathSync(process.execPath));
  const n0 = lines(out);
  await waitFor('node going on', () => lines(out) >= n0 + 3, 10000);
  tryKill(fx.pid, abi.SIG.SIGKILL);
  await fx.reap();
});

/** Nothing of a killed restore left: no stub, not the restored pid, no descendant of ours. */
async function assertNothingLeft(what: string, pid: number): Promise<void> {
  await waitFor(`${what}: nothing left`, () => {
    reapZombies();
    return descendantsOf().length === 0 && !fs.existsSync(`/proc/${pid}`);
  }, 5000, 5).catch(() => {
    throw new Error(`${what}: left behind: ${descendantsOf().map((p) => `${p} ${cmdline(p)} (${fs.readlinkSync(`/proc/${p}/exe`)})`).join(', ')}`);
  });
}

test('stasis restore -d SIGKILLed early (named steps, then random moments): no stub, no half-made process left', async () => {
  const fx = await start('sleep2', () => ['/usr/bin/sleep', '1000']);
  await waitFor('sleep exec', () => exe(fx.pid) === '/usr/bin/sleep');
  const dir = path.join(root, 'sleep2');
  dumpOk(fx.pid, dir);
  await fx.reap();
  for (const step of ['stub', 'clone', 'tree', 'close-inherited']) {
    const r = runStasis(['restore', '-D', dir, '-d'], { STASIS_FAIL_AT: `${step}:kill` });
    assert.equal(r.signal, 'SIGKILL', describeCli(r));
    await assertNothingLeft(step, fx.pid);
  }
  // Random moments within a restore's life, node's start-up included.
  const t0 = Date.now();
  restoreDetached(dir);
  const full = Date.now() - t0;
  tryKill(fx.pid, abi.SIG.SIGKILL);
  await waitGone([fx.pid]);
  let killed = 0;
  for (let i = 0; i < 8; i++) {
    const child = spawn(process.execPath, [STASIS, 'restore', '-D', dir, '-d'], { stdio: 'ignore' });
    const exited = new Promise<number | null>((res) => child.once('exit', (code) => res(code)));
    await new Promise((res) => setTimeout(res, Math.random() * full));
    child.kill('SIGKILL');
    const code = await exited;
    if (code !== 0) killed++;
    // A restore that got as far as letting the process go leaves a whole,
    // untraced, sleeping process (ours to end); anything short of that dies
    // with stasis (the stub by itself or EXITKILL, half-made tasks by EXITKILL).
    const whole = await waitFor('the restored pid dead or whole', () => {
      if (!fs.existsSync(`/proc/${fx.pid}`)) return 'gone';
      const st = procState(fx.pid);
      if (st === 'Z') return 'gone';
      return st === 'S' && tracerPid(fx.pid) === 0 ? 'whole' : undefined;
    }, 5000, 5);
    if (whole === 'whole') tryKill(fx.pid, abi.SIG.SIGKILL);
    await assertNothingLeft(`random kill ${i}`, fx.pid);
  }
  assert.ok(killed > 0, 'some kills landed during the restore');
});
