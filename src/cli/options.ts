// Command-line options, declared once per command: the parser and the help
// text both come from these tables. Pure functions (unit-tested).
import { parseArgs } from 'node:util';
import { StasisError, ErrorCodes } from '../errors';

export interface OptionSpec {
  long: string;
  short?: string;
  /** 'flag' takes no value. */
  type: 'flag' | 'string' | 'int' | 'size';
  /** Value name in the help text. */
  arg?: string;
  help: string;
  /** Repeatable (values collected in an array). */
  multiple?: boolean;
  /** What the value is, in error messages (default: --long). */
  what?: string;
}

export interface CommandSpec {
  name: string;
  usage: string;
  summary: string;
  options: OptionSpec[];
  /** Positional arguments allowed (their names, for the help). */
  positionals?: string[];
}

export type Values = Record<string, string | number | boolean | string[] | undefined>;

export function usageError(msg: string): never {
  throw new StasisError(ErrorCodes.USAGE, `${msg} (see stasis --help)`);
}

/** A size with an optional K/M/G suffix (powers of 1024, as criu). */
export function parseSize(s: string, what: string): number {
  const m = /^(\d+)([KMG]?)B?$/i.exec(s.trim());
  if (!m) usageError(`invalid ${what} '${s}' (a number of bytes, optionally with K, M or G)`);
  const mult = { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3 }[m[2].toUpperCase() as '' | 'K' | 'M' | 'G'];
  const v = Number(m[1]) * mult;
  if (!Number.isSafeInteger(v)) usageError(`${what} '${s}' is too large`);
  return v;
}

function parseInt10(s: string, what: string): number {
  if (!/^\d+$/.test(s.trim())) usageError(`invalid ${what} '${s}'`);
  const v = Number(s);
  if (!Number.isSafeInteger(v)) usageError(`invalid ${what} '${s}'`);
  return v;
}

/** Options every command takes. */
export const COMMON: OptionSpec[] = [
  { long: 'help', short: 'h', type: 'flag', help: 'this help' },
];

/** Options of commands that log (as criu: -o FILE, -v0..-v4). */
export const LOGGING: OptionSpec[] = [
  { long: 'log-file', short: 'o', type: 'string', arg: 'FILE', help: 'write a log of every step to FILE (relative to the images directory)' },
  { long: 'verbosity', type: 'int', arg: 'N', help: 'log level 0-4 (-v0..-v4, or -v/-vv: one more each); default 2; 3 logs each step with its time' },
  { long: 'json', type: 'flag', help: 'print the result (or the error) as one JSON object on stdout' },
];

/**
 * criu's -vN and -v spellings become --verbosity=N before parsing (parseArgs
 * knows no optional values).
 */
export function normalizeArgs(args: string[]): string[] {
  const out: string[] = [];
  let v: number | undefined;
  for (const [i, a] of args.entries()) {
    // criu's bare --manage-cgroups means its default mode.
    if (a === '--manage-cgroups' && (i + 1 >= args.length || args[i + 1].startsWith('-'))) { out.push('--manage-cgroups=soft'); continue; }
    const m = /^-v(\d)$/.exec(a);
    if (m) { v = Number(m[1]); continue; }
    if (/^-v+$/.test(a)) { v = Math.min(4, (v ?? 2) + a.length - 1); continue; }
    out.push(a);
  }
  if (v !== undefined) out.push(`--verbosity=${v}`);
  return out;
}

/** Parse `args` for `cmd`; throws USAGE errors naming the problem. */
export function parseCommand(cmd: CommandSpec, args: string[]): { values: Values; positionals: string[] } {
  const all = [...cmd.options, ...COMMON];
  const config: Record<string, { type: 'string' | 'boolean'; short?: string; multiple?: boolean }> = {};
  for (const o of all) config[o.long] = { type: o.type === 'flag' ? 'boolean' : 'string', ...(o.short ? { short: o.short } : {}), ...(o.multiple ? { multiple: true } : {}) };
  let parsed;
  try {
    parsed = parseArgs({ args: normalizeArgs(args), options: config, allowPositionals: true, strict: true });
  } catch (e) {
    usageError(`${cmd.name}: ${(e as Error).message.replace(/\. To specify a positional argument.*$/s, '')}`);
  }
  const values: Values = {};
  for (const o of all) {
    const raw = (parsed.values as Record<string, unknown>)[o.long];
    if (raw === undefined) continue;
    if (o.type === 'int') values[o.long] = parseInt10(raw as string, o.what ?? `--${o.long}`);
    else if (o.type === 'size') values[o.long] = parseSize(raw as string, o.what ?? `--${o.long}`);
    else values[o.long] = raw as string | boolean | string[];
  }
  const max = cmd.positionals?.length ?? 0;
  if (parsed.positionals.length > max) usageError(`${cmd.name}: unexpected argument '${parsed.positionals[max]}'`);
  return { values, positionals: parsed.positionals };
}

export function formatHelp(cmd: CommandSpec): string {
  const lines = [`usage: ${cmd.usage}`, '', cmd.summary, '', 'options:'];
  for (const o of [...cmd.options, ...COMMON]) {
    const names = `${o.short ? `-${o.short}, ` : '    '}--${o.long}${o.arg ? ` ${o.arg}` : ''}`;
    lines.push(`  ${names.padEnd(34)} ${o.help}`);
  }
  return lines.join('\n');
}
