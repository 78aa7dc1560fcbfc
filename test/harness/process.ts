// Processes: the child subreaper, reaping, polling, and what /proc says about
// a process (stat, status, fds, maps).
import * as fs from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { setChildSubreaper, tryWait4, abi, type WaitStatus } from '../../src/sys';

export { sleep };

let subreaper = false;
/** Once per test process: orphaned fixtures are reparented to us, and we reap them. */
export function initHarness(): void {
  if (subreaper) return;
  setChildSubreaper(true);
  subreaper = true;
  // A safety net, not a cleanup strategy: whatever a failed test left running
  // (a fixture, a restored tree reparented to us) is ours; it must not outlive
  // the test file and spin on a shared machine. Named, so leaks are seen.
  process.on('exit', () => {
    const left = childrenOf().filter((pid) => { try { return statFields(pid)[0] !== 'Z'; } catch { return false; } });
    for (const pid of left) {
      try { process.kill(pid, 'SIGKILL'); } catch { /* gone meanwhile */ }
    }
    if (left.length) process.stderr.write(`harness: killed ${left.length} leftover process(es): ${left.join(' ')}\n`);
  });
}

/** Poll until `cond` is true; throws with `what` after `timeoutMs`. */
export async function waitFor<T>(what: string, cond: () => T | undefined | false, timeoutMs = 5000, stepMs = 10): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = cond();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(stepMs);
  }
}

/**
 * Reap `pid` (our child by reparenting): poll wait4(WNOHANG) until it has
 * exited or was killed. Stops reported by ptrace (when we are its tracer) are
 * not an end: they are skipped. Throws on timeout.
 */
export async function reap(pid: number, timeoutMs = 5000): Promise<WaitStatus & { kind: 'exited' | 'signaled' }> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const r = tryWait4(pid, abi.WAIT.WNOHANG);
    if (typeof r === 'number') throw new Error(`wait4(${pid}): errno ${-r} (not our child, or already reaped)`);
    if (r.kind === 'exited' || r.kind === 'signaled') return r;
    if (Date.now() > end) throw new Error(`pid ${pid} did not exit within ${timeoutMs} ms`);
    await sleep(5);
  }
}

/** Fields of /proc/PID/stat after the comm: [0] = state, [1] = ppid, [2] = pgrp, [3] = session... */
export function statFields(pid: number): string[] {
  const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  return s.slice(s.lastIndexOf(')') + 2).trim().split(' ');
}

/** Every live pid (tgid) on the machine. */
export function allPids(): number[] {
  return fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d)).map(Number);
}

/** Processes whose parent is `ppid` (default: this test process), zombies included. */
export function childrenOf(ppid = process.pid): number[] {
  const out: number[] = [];
  for (const pid of allPids()) {
    try { if (Number(statFields(pid)[1]) === ppid) out.push(pid); } catch { /* gone meanwhile */ }
  }
  return out.sort((a, b) => a - b);
}

/** `pid`'s descendants (not itself), parents before children. */
export function descendantsOf(pid = process.pid): number[] {
  const out: number[] = [];
  const queue = [pid];
  while (queue.length) {
    for (const c of childrenOf(queue.shift()!)) { out.push(c); queue.push(c); }
  }
  return out;
}

export function cmdline(pid: number): string {
  try { return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean).join(' '); } catch { return '?'; }
}

/**
 * Reap every child of ours that is a zombie (but not `except`: Node's own
 * children, whose statuses libuv collects). The processes of a dumped tree
 * are re-parented to us when the dump kills them: their pids stay taken until
 * reaped. Returns the pids reaped with their statuses.
 */
export function reapZombies(except: number[] = []): WaitStatus[] {
  const out: WaitStatus[] = [];
  for (const pid of childrenOf()) {
    if (except.includes(pid)) continue;
    let state: string;
    try { state = statFields(pid)[0]; } catch { continue; }
    if (state !== 'Z') continue;
    const r = tryWait4(pid, abi.WAIT.WNOHANG);
    if (typeof r !== 'number' && (r.kind === 'exited' || r.kind === 'signaled')) out.push(r);
  }
  return out;
}

/** Wait until none of `pids` exists any more (reaping our zombies meanwhile). */
export async function waitGone(pids: number[], timeoutMs = 5000, except: number[] = []): Promise<void> {
  await waitFor(`pids ${pids.join(' ')} to be gone`, () => {
    reapZombies(except);
    return pids.every((p) => !fs.existsSync(`/proc/${p}`));
  }, timeoutMs, 5);
}

export function procStatus(pid: number): Map<string, string> {
  const m = new Map<string, string>();
  for (const line of fs.readFileSync(`/proc/${pid}/status`, 'utf8').split('\n')) {
    const i = line.indexOf(':');
    if (i > 0) m.set(line.slice(0, i), line.slice(i + 1).trim());
  }
  return m;
}

/** One-letter state of /proc/PID/stat (R, S, T, t, Z...). */
export function procState(pid: number): string {
  const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  return s.slice(s.lastIndexOf(')') + 2).split(' ')[0];
}

export function tracerPid(pid: number): number {
  return Number(procStatus(pid).get('TracerPid'));
}

export function listFds(pid: number): string[] {
  return fs.readdirSync(`/proc/${pid}/fd`).sort((a, b) => Number(a) - Number(b));
}

export interface MapsLine {
  start: bigint;
  end: bigint;
  perms: string; // "rw-p"
  path: string;
}

export function readMapsText(pid: number): string {
  return fs.readFileSync(`/proc/${pid}/maps`, 'utf8');
}

export function parseMapsText(text: string): MapsLine[] {
  return text.split('\n').filter(Boolean).map((line) => {
    const m = /^([0-9a-f]+)-([0-9a-f]+) (\S{4}) \S+ \S+ \d+\s*(.*)$/.exec(line);
    if (!m) throw new Error(`bad maps line: ${line}`);
    return { start: BigInt('0x' + m[1]), end: BigInt('0x' + m[2]), perms: m[3], path: m[4] };
  });
}

export function mappingOf(maps: MapsLine[], addr: bigint): MapsLine | undefined {
  return maps.find((v) => v.start <= addr && addr < v.end);
}
