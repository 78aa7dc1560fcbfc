// The log: what stasis did, step by step, for diagnosing a failed dump or
// restore after the fact (-o FILE, -v0..-v4 as criu). Levels: 1 errors,
// 2 warnings (default), 3 steps with timings, 4 everything.
import * as fs from 'node:fs';
import { progress } from './progress';

export const LOG_LEVELS = { ERROR: 1, WARN: 2, INFO: 3, DEBUG: 4 } as const;

let level = 2;
let fd: number | undefined;
const t0 = process.hrtime.bigint();

function stamp(): string {
  return `(${(Number(process.hrtime.bigint() - t0) / 1e9).toFixed(6).padStart(12)})`;
}

/** Log into `file` (created, or truncated, never through a link) at `verbosity`. */
export function openLog(file: string, verbosity: number): void {
  level = verbosity;
  fd = fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_TRUNC | fs.constants.O_NOFOLLOW | fs.constants.O_APPEND, 0o600);
}

export function setLogLevel(verbosity: number): void { level = verbosity; }

/** The open log file's fd, if any (handed to the process that goes on with the command: restore/lazy-handover.ts). */
export function logFd(): number | undefined { return fd; }

/** The log's verbosity. */
export function logLevel(): number { return level; }

/** Log into an fd already open on the log file (another process's, passed to us). */
export function adoptLog(logFd: number, verbosity: number): void {
  closeLog();
  fd = logFd;
  level = verbosity;
}

export function closeLog(): void {
  if (fd !== undefined) fs.closeSync(fd);
  fd = undefined;
}

function write(lvl: number, tag: string, msg: string): void {
  if (fd === undefined || lvl > level) return;
  try { fs.writeSync(fd, `${stamp()} ${tag} ${msg}\n`); } catch { /* logging never fails a dump */ }
}

export const log = {
  error: (msg: string) => write(LOG_LEVELS.ERROR, 'Error', msg),
  warn: (msg: string) => write(LOG_LEVELS.WARN, 'Warn ', msg),
  info: (msg: string) => write(LOG_LEVELS.INFO, 'Info ', msg),
  debug: (msg: string) => write(LOG_LEVELS.DEBUG, 'Debug', msg),
  /** Whether debug lines are written (to skip building costly messages). */
  get debugging(): boolean { return fd !== undefined && level >= LOG_LEVELS.DEBUG; },
};

/** Run `f` and add its duration to `timings[name]` (no log line: for steps run many times). */
export function tally<T>(timings: Record<string, number>, name: string, f: () => T): T {
  const s = process.hrtime.bigint();
  try {
    return f();
  } finally {
    timings[name] = (timings[name] ?? 0) + Number(process.hrtime.bigint() - s) / 1e6;
  }
}

/** Run `f` as a named step: logged with its duration, recorded in `timings`. */
export function timed<T>(timings: Record<string, number>, name: string, f: () => T): T {
  const s = process.hrtime.bigint();
  log.info(`${name} ...`);
  progress.enter(name);
  try {
    return f();
  } finally {
    progress.leave();
    const ms = Number(process.hrtime.bigint() - s) / 1e6;
    timings[name] = (timings[name] ?? 0) + ms;
    log.info(`${name} done in ${ms.toFixed(1)} ms`);
  }
}

/** Top-level steps in the order run, each followed by its parts. */
export function ordered(t: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(t)) {
    if (k.includes('.')) continue;
    out[k] = v;
    for (const [k2, v2] of Object.entries(t)) if (k2.startsWith(`${k}.`)) out[k2] = v2;
  }
  return out;
}
