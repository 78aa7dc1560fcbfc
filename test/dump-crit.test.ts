// The images are CRIU's: crit (Debian package criu) decodes every one, and
// what it shows matches what the kernel showed about the process just before
// the dump. crit is required: CI installs criu.
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  Fixture, initHarness, runStasis, describeCli, tmpDir, crit, parseMapsText, readMapsText, mappingOf,
  loadDumpedMemory, procStatus, type MapsLine,
} from './harness';

/* eslint-disable @typescript-eslint/no-explicit-any */
type Json = any;

let fx: Fixture;
let dir: string;
let mapsBefore: MapsLine[];
/** The same maps as text (for the inode column). */
let mapsTextBefore: string;
let statBefore: string[];
const scratch: string[] = [];

before(async () => {
  initHarness();
  fx = await Fixture.start('memory');
  dir = path.join(tmpDir('crit'), 'img');
  scratch.push(path.dirname(dir));
  // The fixture does not change its mappings while it counts, so maps taken
  // just before the dump are the ones the dump saw.
  mapsTextBefore = readMapsText(fx.pid);
  mapsBefore = parseMapsText(mapsTextBefore);
  const s = fs.readFileSync(`/proc/${fx.pid}/stat`, 'utf8');
  statBefore = s.slice(s.lastIndexOf(')') + 2).split(' ');
  const r = runStasis(['dump', '-t', String(fx.pid), '-D', dir, '-R']);
  assert.equal(r.status, 0, describeCli(r));
});

after(async () => {
  await fx?.kill();
  for (const d of scratch) fs.rmSync(d, { recursive: true, force: true });
});

function show(file: string): Json {
  return JSON.parse(crit(['show', path.join(dir, file)]));
}

/** crit show prints 64-bit fields as "0x..." strings or numbers. */
function big(v: unknown): bigint {
  if (typeof v === 'number') return BigInt(v);
  if (typeof v === 'string') return BigInt(v);
  throw new Error(`not a number: ${JSON.stringify(v)}`);
}

/** "PROT_READ | PROT_EXEC" (or "" for PROT_NONE) → bits. */
function protBits(s: string): number {
  const names: Record<string, number> = { PROT_READ: 1, PROT_WRITE: 2, PROT_EXEC: 4 };
  return s.split('|').map((x) => x.trim()).filter(Boolean).reduce((a, x) => {
    if (!(x in names)) throw new Error(`unknown prot ${x}`);
    return a | names[x];
  }, 0);
}

function permsBits(perms: string): number {
  return (perms[0] === 'r' ? 1 : 0) | (perms[1] === 'w' ? 2 : 0) | (perms[2] === 'x' ? 4 : 0);
}

test('crit decode accepts every image except the raw pages-*.img', () => {
  const files = fs.readdirSync(dir).filter((f) => f.endsWith('.img'));
  const decoded: string[] = [];
  const magics = new Map<string, string>();
  for (const f of files) {
    if (f.startsWith('pages-')) continue;
    const out = crit(['decode', '-i', path.join(dir, f)]);
    let j: Json;
    try { j = JSON.parse(out); } catch (e) { assert.fail(`crit decode ${f}: not JSON: ${(e as Error).message}`); }
    assert.ok(Array.isArray(j.entries), `${f} has entries`);
    magics.set(f, j.magic);
    decoded.push(f);
  }
  const pid = fx.pid;
  const want: Record<string, string> = {
    'inventory.img': 'INVENTORY', 'pstree.img': 'PSTREE', [`core-${pid}.img`]: 'CORE', [`ids-${pid}.img`]: 'IDS',
    [`mm-${pid}.img`]: 'MM', [`pagemap-${pid}.img`]: 'PAGEMAP', [`fs-${pid}.img`]: 'FS', 'files.img': 'FILES',
    'fdinfo-1.img': 'FDINFO',
  };
  for (const [f, magic] of Object.entries(want)) assert.equal(magics.get(f), magic, `${f} decodes as ${magic}`);
  assert.equal(decoded.length, files.length - files.filter((f) => f.startsWith('pages-')).length);
  assert.ok(decoded.length >= Object.keys(want).length, `decoded ${decoded.length} images`);
});

test('core: registers of the dumped thread', () => {
  const core = show(`core-${fx.pid}.img`).entries[0];
  assert.equal(core.mtype, 'X86_64');
  const regs = core.thread_info.gpregs;
  assert.equal(big(regs.fs_base), fx.addr('FSBASE'), 'fs_base equals arch_prctl(ARCH_GET_FS) in the fixture');
  const ip = big(regs.ip);
  const code = mappingOf(mapsBefore, ip);
  assert.ok(code, `ip 0x${ip.toString(16)} lies in a mapping`);
  assert.equal(code!.perms.slice(0, 3), 'r-x', `ip is in an r-x mapping (${code!.perms} ${code!.path})`);
  assert.equal(mappingOf(mapsBefore, big(regs.sp))?.path, '[stack]', 'sp is in [stack]');
  assert.equal(big(regs.cs), 0x33n, '64-bit user code segment');
  assert.equal(regs.mode, 'NATIVE');
  assert.equal(core.tc.comm, 'memory');
  assert.equal(core.tc.task_state, 'Alive');
  assert.equal(core.tc.sigactions.length, 62, '64 signals less SIGKILL and SIGSTOP');
  // The fixture handles SIGTERM: that disposition is in the image (SIGTERM=15 → index 13).
  assert.notEqual(big(core.tc.sigactions[13].sigaction), 0n, 'SIGTERM handler recorded');
  assert.ok(core.thread_info.fpregs, 'FPU state present');
});

test('mm: the VMA list equals /proc/PID/maps, [vsyscall] included', () => {
  const mm = show(`mm-${fx.pid}.img`).entries[0];
  const vmas: Json[] = mm.vmas;
  const got = vmas.map((v) => `${big(v.start).toString(16)}-${big(v.end).toString(16)} ${protBits(v.prot)} ${String(v.flags).includes('MAP_SHARED') ? 's' : 'p'}`);
  const want = mapsBefore.map((m) => `${m.start.toString(16)}-${m.end.toString(16)} ${permsBits(m.perms)} ${m.perms[3]}`);
  assert.deepEqual(got, want);
  assert.ok(mapsBefore.some((m) => m.path === '[vsyscall]'), 'this kernel shows [vsyscall]');
  assert.ok(mapsBefore.some((m) => m.perms === '---p') && mapsBefore.some((m) => m.perms === 'rw-s'), 'PROT_NONE and shared mappings compared');
  assert.match(String(vmas[vmas.length - 1].status), /VMA_AREA_VSYSCALL/);

  // File mappings name their file through files.img; a MAP_SHARED anonymous
  // mapping (shmem, "/dev/zero (deleted)" in maps) is no file: its shmid is
  // the shmem inode, as with CRIU.
  const files = new Map<number, string>();
  for (const f of show('files.img').entries) if (f.reg) files.set(f.id, f.reg.name);
  const inodes = mapsTextBefore.split('\n').filter(Boolean).map((line) => line.split(/\s+/)[4]);
  assert.equal(inodes.length, mapsBefore.length);
  const shanon = fx.manifest.regions.find((r) => r.name === 'shanon')!;
  let named = 0, sharedAnon = 0;
  for (let i = 0; i < vmas.length; i++) {
    const m = mapsBefore[i];
    if (m.path.startsWith('/dev/zero')) {
      assert.equal(m.start, shanon.addr, `vma ${m.start.toString(16)} is the fixture's shared anonymous region`);
      assert.equal(Number(m.end - m.start), shanon.len);
      assert.match(String(vmas[i].status), /VMA_ANON_SHARED/, `vma ${m.start.toString(16)} is anonymous shared`);
      assert.match(String(vmas[i].flags), /MAP_SHARED/);
      assert.match(String(vmas[i].flags), /\bMAP_ANON(YMOUS)?\b/, 'MAP_ANONYMOUS (crit says MAP_ANON)');
      assert.equal(big(vmas[i].shmid), BigInt(inodes[i]), `vma ${m.start.toString(16)}: shmid is the shmem inode`);
      sharedAnon++;
      continue;
    }
    if (!m.path.startsWith('/')) continue;
    assert.equal(files.get(Number(vmas[i].shmid)), m.path, `vma ${m.start.toString(16)} names its file`);
    named++;
  }
  assert.ok(named >= 4, `checked ${named} file mappings`);
  assert.equal(sharedAnon, 1, 'one MAP_SHARED anonymous mapping');
  assert.ok([...files.values()].some((n) => n.endsWith('/sharedfile')));
  assert.equal(big(mm.mm_brk), fx.addr('BRK'), 'brk equals sbrk(0) in the fixture');
  assert.equal(big(mm.mm_start_brk), BigInt(statBefore[47 - 3]), 'start_brk from /proc/PID/stat');
  assert.equal(files.get(Number(mm.exe_file_id)), fs.readlinkSync(`/proc/${fx.pid}/exe`));
});

test('pagemap: head names the pages file; entries agree with the library reader', () => {
  const pm = show(`pagemap-${fx.pid}.img`).entries;
  assert.ok(Number.isInteger(pm[0].pages_id) && pm[0].pages_id > 0, `head ${JSON.stringify(pm[0])}`);
  assert.ok(fs.existsSync(path.join(dir, `pages-${pm[0].pages_id}.img`)));
  const mem = loadDumpedMemory(dir, fx.pid);
  assert.equal(mem.pagesId, pm[0].pages_id);
  assert.equal(pm.length - 1, mem.entries.length);
  assert.ok(mem.entries.length > 5);
  pm.slice(1).forEach((e: Json, i: number) => {
    assert.equal(big(e.vaddr), mem.entries[i].vaddr);
    assert.equal(e.nr_pages, mem.entries[i].nrPages);
    assert.equal(e.flags, 'PE_PRESENT');
  });
  const total = pm.slice(1).reduce((a: number, e: Json) => a + e.nr_pages, 0);
  assert.equal(fs.statSync(path.join(dir, `pages-${pm[0].pages_id}.img`)).size, total * 4096);
});

test('pstree, ids, fs, fdinfo', () => {
  const ps = show('pstree.img').entries;
  assert.equal(ps.length, 1);
  assert.equal(ps[0].pid, fx.pid);
  assert.deepEqual(ps[0].threads, [fx.pid]);
  assert.equal(ps[0].pgid, Number(statBefore[5 - 3]));
  assert.equal(ps[0].sid, Number(statBefore[6 - 3]));
  assert.equal(ps[0].sid, fx.pid, 'the fixture is a session leader (setsid)');

  const ids = show(`ids-${fx.pid}.img`).entries[0];
  assert.ok(ids.vm_id > 0 && ids.files_id > 0 && ids.fs_id > 0);
  const inv = show('inventory.img').entries[0];
  assert.deepEqual(inv.root_ids, ids);

  const files = new Map<number, string>();
  for (const f of show('files.img').entries) if (f.reg) files.set(f.id, f.reg.name);
  const fsImg = show(`fs-${fx.pid}.img`).entries[0];
  assert.equal(files.get(fsImg.cwd_id), fs.readlinkSync(`/proc/${fx.pid}/cwd`));
  assert.equal(files.get(fsImg.root_id), '/');
  assert.equal(fsImg.umask, parseInt(procStatus(fx.pid).get('Umask')!, 8));

  const fds = show(`fdinfo-${ids.files_id}.img`).entries;
  assert.deepEqual(fds.map((e: Json) => e.fd), [0, 1, 2]);
  assert.deepEqual(fds.map((e: Json) => files.get(e.id)), ['/dev/null', fx.logPath, fx.logPath]);
  assert.equal(fds[1].id, fds[2].id, 'fds 1 and 2 share one open file description');
});

test('core: signal state of the victim (handler, flags, mask, blocked, ignored)', async () => {
  const v = await Fixture.start('victim');
  const vdir = path.join(tmpDir('crit-victim'), 'img');
  scratch.push(path.dirname(vdir));
  try {
    const r = runStasis(['dump', '-t', String(v.pid), '-D', vdir, '-R']);
    assert.equal(r.status, 0, describeCli(r));
    const core = JSON.parse(crit(['show', path.join(vdir, `core-${v.pid}.img`)])).entries[0];
    const idx = (sig: number) => sig - 1 - (sig > 9 ? 1 : 0) - (sig > 19 ? 1 : 0); // KILL, STOP left out
    const usr1 = core.tc.sigactions[idx(10)];
    assert.equal(big(usr1.sigaction), v.addr('USR1HANDLER'), 'SIGUSR1 handler address');
    const SA_RESTART = 0x10000000n, SA_RESTORER = 0x04000000n;
    assert.equal(big(usr1.flags) & ~SA_RESTORER, SA_RESTART, 'SIGUSR1 flags: SA_RESTART (+ glibc SA_RESTORER)');
    assert.equal(big(usr1.mask), (1n << 1n) | (1n << 2n) | (1n << BigInt(34 + 3 - 1)), 'SIGUSR1 sa_mask {INT, QUIT, RTMIN+3}');
    assert.equal(big(core.tc.sigactions[idx(13)].sigaction), 1n, 'SIGPIPE is SIG_IGN');
    assert.equal(big(core.tc.sigactions[idx(12)].sigaction), 0n, 'SIGUSR2 is SIG_DFL');
    assert.equal(big(core.tc.blk_sigset), 1n << 11n, 'only SIGUSR2 blocked');
    assert.equal(big(core.thread_core.blk_sigset), 1n << 11n, 'thread mask: only SIGUSR2 blocked');
    await v.waitCounter(3n); // its self-check wants a few full sleeps
    const { status, log } = await v.terminate();
    assert.match(log, /^PASS$/m, log);
    assert.equal(status.kind, 'exited');
  } finally {
    await v.kill();
  }
});

test('the dumped fixture ran on and passes its self-check', async () => {
  await fx.assertCounting();
  const { status, log } = await fx.terminate();
  assert.match(log, /^PASS$/m, log);
  assert.deepEqual(status, { kind: 'exited', pid: fx.pid, code: 0 });
});
