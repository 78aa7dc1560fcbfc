// The native boundary: the only module that imports koffi. Everything that
// crosses into C goes through the two functions below.
//
// Only synchronous koffi calls are used: ptrace requests must come from the
// thread that attached, and koffi's .async runs on a worker thread.
import type * as Koffi from 'koffi';
import { POSIX_SPAWN, POSIX_SPAWN_FILE_ACTIONS_SIZE, POSIX_SPAWNATTR_SIZE, LIBC_SIGSET_SIZE } from './abi';

/**
 * koffi's native module itself: its index.js also loads https, crypto and
 * zlib (for its installer) and wraps deprecated names, ~15 ms of start-up we
 * do not need. Any other layout (another platform's build): the package.
 */
function loadKoffi(): typeof Koffi {
  try {
    const native = require(`koffi/build/koffi/${process.platform}_${process.arch}/koffi.node`) as typeof Koffi & { version?: string };
    const pkg = require('koffi/package.json') as { version: string };
    if (native.version === pkg.version) return native;
  } catch { /* the package's own loader below */ }
  return require('koffi') as typeof Koffi;
}

const koffi = loadKoffi();

const libc = koffi.load('libc.so.6');

// syscall(2) is variadic; a fixed 7-argument prototype is sound on x86-64
// (arguments travel in registers, unused ones are ignored by the kernel).
const rawSyscall = libc.func(
  'long syscall(long nr, intptr_t a, intptr_t b, intptr_t c, intptr_t d, intptr_t e, intptr_t f)',
);

export type Arg = number | bigint;

/**
 * Buffers whose address was taken since the last system call. A Buffer that
 * the caller no longer references may be collected (and its memory reused)
 * between addressOf() and the call that passes the address to the kernel:
 * keep every one alive until the next call has returned.
 */
let pinned: (Buffer | Uint8Array)[] = [];

/** Raw system call. Returns the kernel's result, or -errno on failure. */
export function syscall(nr: number, a: Arg = 0, b: Arg = 0, c: Arg = 0, d: Arg = 0, e: Arg = 0, f: Arg = 0): number {
  const r = rawSyscall(nr, a, b, c, d, e, f) as number | bigint;
  pinned = [];
  const v = typeof r === 'bigint' ? Number(r) : r;
  if (v === -1) return -(koffi.errno() as number);
  return v;
}

/** Same as syscall() but keeps the full 64-bit result (for addresses above 2^53). */
export function syscallBig(nr: number, a: Arg = 0, b: Arg = 0, c: Arg = 0, d: Arg = 0, e: Arg = 0, f: Arg = 0): bigint {
  const r = rawSyscall(nr, a, b, c, d, e, f) as number | bigint;
  pinned = [];
  const v = BigInt(r);
  if (v === -1n) return -BigInt(koffi.errno() as number);
  return v;
}

/** Address of a Buffer's first byte (byteOffset included). */
export function addressOf(buf: Buffer | Uint8Array): bigint {
  pinned.push(buf);
  return koffi.address(buf) as bigint;
}

type SpawnFns = Record<'spawn' | 'actionsInit' | 'actionsDestroy' | 'addDup2' | 'addOpen' | 'attrInit' | 'attrDestroy' | 'setFlags' | 'setSigDefault' | 'setSigMask', Koffi.KoffiFunction>;
let spawnFns: SpawnFns | undefined;

/** libc's posix_spawn and its helpers, declared on first use (a dump never needs them). */
function spawnApi(): SpawnFns {
  return spawnFns ??= {
    spawn: libc.func('int posix_spawn(intptr_t pid, const char *path, intptr_t actions, intptr_t attr, intptr_t argv, intptr_t envp)'),
    actionsInit: libc.func('int posix_spawn_file_actions_init(intptr_t actions)'),
    actionsDestroy: libc.func('int posix_spawn_file_actions_destroy(intptr_t actions)'),
    addDup2: libc.func('int posix_spawn_file_actions_adddup2(intptr_t actions, int fd, int newfd)'),
    addOpen: libc.func('int posix_spawn_file_actions_addopen(intptr_t actions, int fd, const char *path, int oflag, uint32_t mode)'),
    attrInit: libc.func('int posix_spawnattr_init(intptr_t attr)'),
    attrDestroy: libc.func('int posix_spawnattr_destroy(intptr_t attr)'),
    setFlags: libc.func('int posix_spawnattr_setflags(intptr_t attr, short flags)'),
    setSigDefault: libc.func('int posix_spawnattr_setsigdefault(intptr_t attr, intptr_t set)'),
    setSigMask: libc.func('int posix_spawnattr_setsigmask(intptr_t attr, intptr_t set)'),
  };
}

/** What the spawned program starts with: fds opened on a path, fds duplicated from ours. */
export interface SpawnFds {
  open: { fd: number; path: string; flags: number }[];
  dup2: { from: number; to: number }[];
}

/**
 * posix_spawn(3) of `path` with `argv`, an empty environment, every signal
 * at its default and none blocked. glibc starts the child with
 * clone(CLONE_VM|CLONE_VFORK) on a stack of its own (safe in a threaded
 * process, unlike fork) and it is no child that Node's reaper waits for, so
 * its wait statuses stay ours. Returns the pid, or -errno.
 */
export function posixSpawn(path: string, argv: string[], fds: SpawnFds): number {
  const f = spawnApi();
  const actions = Buffer.alloc(POSIX_SPAWN_FILE_ACTIONS_SIZE);
  const attr = Buffer.alloc(POSIX_SPAWNATTR_SIZE);
  const all = Buffer.alloc(LIBC_SIGSET_SIZE, 0xff);
  const none = Buffer.alloc(LIBC_SIGSET_SIZE);
  const strs = argv.map((a) => Buffer.from(`${a}\0`));
  const argvBuf = Buffer.alloc(8 * (strs.length + 1));
  strs.forEach((s, i) => argvBuf.writeBigUInt64LE(koffi.address(s) as bigint, 8 * i));
  const envBuf = Buffer.alloc(8);
  const pidBuf = Buffer.alloc(4);
  const at = (b: Buffer) => koffi.address(b) as bigint;
  let r = f.actionsInit(at(actions)) as number;
  if (r) return -r;
  try {
    r = f.attrInit(at(attr)) as number;
    if (r) return -r;
    try {
      for (const o of fds.open) if ((r = f.addOpen(at(actions), o.fd, o.path, o.flags, 0) as number)) return -r;
      for (const d of fds.dup2) if ((r = f.addDup2(at(actions), d.from, d.to) as number)) return -r;
      if ((r = f.setSigDefault(at(attr), at(all)) as number) || (r = f.setSigMask(at(attr), at(none)) as number) ||
        (r = f.setFlags(at(attr), POSIX_SPAWN.SETSIGDEF | POSIX_SPAWN.SETSIGMASK) as number)) return -r;
      r = f.spawn(at(pidBuf), path, at(actions), at(attr), at(argvBuf), at(envBuf)) as number;
      // Keeps every buffer whose address was passed alive until here.
      void [strs, argvBuf, envBuf, all, none];
      return r ? -r : pidBuf.readInt32LE(0);
    } finally {
      f.attrDestroy(at(attr));
    }
  } finally {
    f.actionsDestroy(at(actions));
  }
}
