// The progress line of a long dump, pre-dump or restore on a terminal:
//
//   stasis dump: memory  105472/262144 pages (40%)  652 MB/s
//
// redrawn in place (carriage return, erase to the end of the line) on
// stderr. Nothing is drawn in the first second (a short run shows only its
// final line), nor more often than ten times a second, nor when stderr is
// not a terminal or with --json (the command line installs a line only
// then). The library reports phases (every `timed` step) and pages as it
// goes; without a line installed that is a call that does nothing, and with
// one the hot loops report once per chunk (16 MiB), never per page.
import * as fs from 'node:fs';

/** Nothing is drawn before this many ms (STASIS_PROGRESS_AFTER_MS changes it, for tests). */
export const DELAY_MS = 1000;
/** At most one redraw per this many ms (STASIS_PROGRESS_EVERY_MS, for tests). */
export const EVERY_MS = 100;
const PAGE_BYTES = 4096;

/** One line of progress; `width` columns at most (the terminal's). */
export function formatProgress(verb: string, phase: string, done: number, total: number, bytesPerSec: number | undefined, width = 80): string {
  let s = `stasis ${verb}: ${phase}`;
  if (total > 0 || done > 0) {
    const t = Math.max(total, done);
    const pct = t ? Math.floor((done * 100) / t) : 100;
    s += `  ${done}/${t} pages (${pct}%)`;
    if (bytesPerSec !== undefined && Number.isFinite(bytesPerSec)) s += `  ${Math.round(bytesPerSec / 1e6)} MB/s`;
  }
  return s.length > width ? s.slice(0, Math.max(0, width)) : s;
}

export interface LineOptions {
  /** Where the line goes (stderr). */
  write: (s: string) => void;
  /** A clock in ms. */
  now?: () => number;
  delayMs?: number;
  everyMs?: number;
  width?: number;
}

/** A progress line being drawn: phases and pages come in, redraws are throttled. */
export class ProgressLine {
  private readonly now: () => number;
  private readonly start: number;
  private readonly delayMs: number;
  private readonly everyMs: number;
  private lastDraw = -Infinity;
  private phases: string[] = [];
  private done = 0;
  private total = 0;
  /** When the first pages were counted, and how many then (the rate is from there). */
  private pagesSince: number | undefined;
  private shown = false;
  /** How many lines were drawn (for tests). */
  draws = 0;

  constructor(readonly verb: string, private readonly opts: LineOptions) {
    this.now = opts.now ?? (() => performance.now());
    this.start = this.now();
    this.delayMs = opts.delayMs ?? DELAY_MS;
    this.everyMs = opts.everyMs ?? EVERY_MS;
  }

  enter(phase: string): void { this.phases.push(phase); this.tick(); }
  leave(): void { this.phases.pop(); }

  /** `n` more pages expected. */
  addTotal(n: number): void { this.total += n; }

  /** `n` more pages done. */
  addDone(n: number): void {
    if (this.pagesSince === undefined) this.pagesSince = this.now();
    this.done += n;
    this.tick();
  }

  /** Redraw if it is time. */
  tick(): void {
    const t = this.now();
    if (t - this.start < this.delayMs || t - this.lastDraw < this.everyMs) return;
    this.lastDraw = t;
    const secs = this.pagesSince === undefined ? 0 : (t - this.pagesSince) / 1000;
    // No rate from the first tenth of a second of pages: too few to tell.
    const rate = secs >= 0.1 ? (this.done * PAGE_BYTES) / secs : undefined;
    const phase = this.phases.length ? this.phases[this.phases.length - 1] : 'starting';
    this.opts.write(`\r${formatProgress(this.verb, phase, this.done, this.total, rate, (this.opts.width ?? 80) - 1)}\x1b[K`);
    this.shown = true;
    this.draws++;
  }

  /** Erase the line (before the final line or an error). */
  end(): void {
    if (this.shown) this.opts.write('\r\x1b[K');
    this.shown = false;
  }
}

let line: ProgressLine | undefined;

/** What the library calls: all no-ops unless a line is installed. */
export const progress = {
  get active(): boolean { return line !== undefined; },
  enter(phase: string): void { line?.enter(phase); },
  leave(): void { line?.leave(); },
  addTotal(pages: number): void { line?.addTotal(pages); },
  addDone(pages: number): void { line?.addDone(pages); },
};

/**
 * Run `f` with a progress line on stderr when `columns` says it is a
 * terminal that wide (0: it does not say) and undefined when it is none or
 * with --json; the line is erased when `f` ends, however it ends.
 */
export function withProgress<T>(verb: string, columns: number | undefined, f: () => T): T {
  if (columns === undefined) return f();
  const env = (name: string, dflt: number) => {
    const v = Number(process.env[name] ?? NaN);
    return Number.isFinite(v) && v >= 0 ? v : dflt;
  };
  line = new ProgressLine(verb, {
    write: (s) => { try { fs.writeSync(2, s); } catch { /* a closed terminal never fails the dump */ } },
    delayMs: env('STASIS_PROGRESS_AFTER_MS', DELAY_MS),
    everyMs: env('STASIS_PROGRESS_EVERY_MS', EVERY_MS),
    width: columns || 80,
  });
  try {
    return f();
  } finally {
    line.end();
    line = undefined;
  }
}
