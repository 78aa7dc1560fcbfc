// Cross-process memory, pidfds, kcmp, signals, prctl and friends.
import { addressOf, posixSpawn, type SpawnFds } from './native';
import { sys, sysTry } from './call';
import { SyscallError } from '../errors';
import { IOVEC, PR, LOCK, UIO_MAXIOV, TIOCGWINSZ, WINSIZE, IOPRIO, CPU_SET_BYTES, CPU_SET_WORD_BITS, SCHED_PARAM } from './abi';

const iovLocal = Buffer.alloc(IOVEC.size);
const iovRemote = Buffer.alloc(IOVEC.size);

function fillIov(local: Buffer, remoteAddr: bigint | number, len: number): void {
  IOVEC.encode({ base: addressOf(local), len }, iovLocal);
  IOVEC.encode({ base: BigInt(remoteAddr), len }, iovRemote);
}

/** process_vm_readv of one range into `into` (first len bytes). Returns bytes read (may be short). */
export function processVmReadv(pid: number, remoteAddr: bigint | number, into: Buffer, len = into.length): number {
  fillIov(into, remoteAddr, len);
  return sys('process_vm_readv', pid, addressOf(iovLocal), 1, addressOf(iovRemote), 1, 0, `pid ${pid}`);
}

let iovMany: Buffer | undefined;

/**
 * process_vm_readv of up to UIO_MAXIOV remote ranges (`addrs[i]`, `lens[i]`)
 * into `into`, packed one after another from offset 0. Returns the bytes read:
 * short if a range could not be read (the kernel stops at the first).
 */
export function processVmReadvMany(pid: number, addrs: bigint[], lens: number[], into: Buffer): number {
  const n = addrs.length;
  if (n > UIO_MAXIOV) throw new RangeError(`${n} iovecs (at most ${UIO_MAXIOV})`);
  const iov = (iovMany ??= Buffer.alloc(UIO_MAXIOV * IOVEC.size));
  let total = 0;
  for (let i = 0; i < n; i++) {
    iov.writeBigUInt64LE(addrs[i], i * IOVEC.size + IOVEC.offsets.base);
    iov.writeBigUInt64LE(BigInt(lens[i]), i * IOVEC.size + IOVEC.offsets.len);
    total += lens[i];
  }
  IOVEC.encode({ base: addressOf(into), len: total }, iovLocal);
  return sys('process_vm_readv', pid, addressOf(iovLocal), 1, addressOf(iov), n, 0, `pid ${pid}`);
}

export function processVmWritev(pid: number, remoteAddr: bigint | number, from: Buffer, len = from.length): number {
  fillIov(from, remoteAddr, len);
  return sys('process_vm_writev', pid, addressOf(iovLocal), 1, addressOf(iovRemote), 1, 0, `pid ${pid}`);
}

export function pidfdOpen(pid: number, flags = 0): number {
  return sys('pidfd_open', pid, flags, 0, 0, 0, 0, `pid ${pid}`);
}

export function pidfdGetfd(pidfd: number, targetfd: number): number {
  return sys('pidfd_getfd', pidfd, targetfd, 0, 0, 0, 0, `fd ${targetfd}`);
}

/**
 * process_mrelease(2): free the memory of a process that is dying (SIGKILLed)
 * in the caller, beside its own exit, instead of leaving all of it to the
 * exiting task. Returns -errno (EINVAL: not dying, or its memory is shared
 * with a live process; ENOSYS before Linux 5.15): freeing is then the exit's.
 */
export function tryProcessMrelease(pidfd: number): number {
  return sysTry('process_mrelease', pidfd, 0);
}

/** A copy of fd `fd` of process `pid` as an fd of ours (the same open file description). Close it when done. */
export function grabFd(pid: number, fd: number): number {
  const pidfd = pidfdOpen(pid);
  try {
    return pidfdGetfd(pidfd, fd);
  } finally {
    sysTry('close', pidfd);
  }
}

export function kcmp(pid1: number, pid2: number, type: number, idx1 = 0, idx2 = 0): number {
  return sys('kcmp', pid1, pid2, type, idx1, idx2);
}

export function kill(pid: number, sig: number): void {
  sys('kill', pid, sig, 0, 0, 0, 0, `pid ${pid}`);
}
export function tryKill(pid: number, sig: number): number {
  return sysTry('kill', pid, sig);
}
export function tgkill(tgid: number, tid: number, sig: number): void {
  sys('tgkill', tgid, tid, sig, 0, 0, 0, `tid ${tid}`);
}

export function getpid(): number { return sys('getpid'); }
export function gettid(): number { return sys('gettid'); }

export function prctl(option: number, a: number | bigint = 0, b: number | bigint = 0, c: number | bigint = 0, d: number | bigint = 0): number {
  return sys('prctl', option, a, b, c, d);
}

export function setChildSubreaper(on = true): void {
  prctl(PR.SET_CHILD_SUBREAPER, on ? 1 : 0);
}

/** flock(2) on an fd of ours; returns -errno instead of throwing (EWOULDBLOCK is an answer). */
export function flock(fd: number, op: number): number {
  return sysTry('flock', fd, op);
}
export { LOCK };

export function geteuid(): number { return sys('geteuid'); }
export function getegid(): number { return sys('getegid'); }

/**
 * The columns of the terminal `fd` is (0 when it does not say), or undefined
 * when it is no terminal. Node's isTTY/columns would load its tty and net
 * modules, several ms of a small dump's start-up.
 */
export function terminalColumns(fd: number): number | undefined {
  const b = Buffer.alloc(WINSIZE.size);
  if (sysTry('ioctl', fd, TIOCGWINSZ, addressOf(b)) < 0) return undefined;
  return WINSIZE.decode(b).cols;
}

/**
 * Start `path` as our child by posix_spawn (see native.ts): no shell, no
 * fork of this process, no child Node's reaper would wait for.
 */
export function spawnDirect(path: string, argv: string[], fds: SpawnFds): number {
  const r = posixSpawn(path, argv, fds);
  if (r < 0) throw new SyscallError('posix_spawn', -r, path);
  return r;
}

/** A thread's CPU affinity as the mask's 64-bit words (CPU n: bit n % 64 of word n / 64), without zero words at the end. */
export function schedGetAffinity(tid: number): bigint[] {
  const buf = Buffer.alloc(CPU_SET_BYTES);
  const n = sys('sched_getaffinity', tid, buf.length, addressOf(buf), 0, 0, 0, `thread ${tid}`);
  const words: bigint[] = [];
  for (let off = 0; off < n; off += CPU_SET_WORD_BITS / 8) words.push(buf.readBigUInt64LE(off));
  while (words.length > 1 && words[words.length - 1] === 0n) words.pop();
  return words;
}

export function schedSetAffinity(tid: number, words: readonly bigint[]): void {
  const buf = Buffer.alloc(CPU_SET_BYTES);
  words.forEach((w, i) => buf.writeBigUInt64LE(w, i * (CPU_SET_WORD_BITS / 8)));
  sys('sched_setaffinity', tid, buf.length, addressOf(buf), 0, 0, 0, `thread ${tid}`);
}

/** The affinity mask (as schedSetAffinity takes it) of CPU `cpu` alone. */
export function cpuMask(cpu: number): bigint[] {
  const word = Math.floor(cpu / CPU_SET_WORD_BITS);
  return Array.from({ length: word + 1 }, (_, i) => (i === word ? 1n << BigInt(cpu % CPU_SET_WORD_BITS) : 0n));
}

/** The CPU the calling thread runs on (getcpu(2); it may move right after). */
export function getcpu(): number {
  const b = Buffer.alloc(4);
  sys('getcpu', addressOf(b), 0, 0, 0, 0, 0, 'getcpu');
  return b.readUInt32LE(0);
}

/** sched_getscheduler and sched_getparam: one thread's policy (SCHED_RESET_ON_FORK included) and priority. */
export function schedGetScheduler(tid: number): { policy: number; priority: number } {
  const policy = sys('sched_getscheduler', tid, 0, 0, 0, 0, 0, `thread ${tid}`);
  const b = Buffer.alloc(SCHED_PARAM.size);
  sys('sched_getparam', tid, addressOf(b), 0, 0, 0, 0, `thread ${tid}`);
  return { policy, priority: SCHED_PARAM.decode(b).priority };
}

/** sched_setscheduler(tid, policy, priority): one thread's policy; -errno on failure. */
export function trySchedSetScheduler(tid: number, policy: number, priority = 0): number {
  return sysTry('sched_setscheduler', tid, policy, addressOf(SCHED_PARAM.encode({ priority })));
}

/** A thread's I/O priority (class, hint and level, as ioprio_get gives them). */
export function ioprioGet(tid: number): number {
  return sys('ioprio_get', IOPRIO.WHO_PROCESS, tid, 0, 0, 0, 0, `thread ${tid}`);
}

export function ioprioSet(tid: number, ioprio: number): void {
  sys('ioprio_set', IOPRIO.WHO_PROCESS, tid, ioprio, 0, 0, 0, `thread ${tid}: ioprio 0x${ioprio.toString(16)}`);
}
