// The command line: a thin layer over the library (dump, restore, show...).
// Every error is one line on stderr (and, with --json, a JSON object on
// stdout); exit 2 for usage errors, 1 for others.
import { StasisError, ErrorCodes } from '../errors';
import { closeLog, log } from '../log';
import { COMMANDS, started } from './commands';
import { parseCommand, formatHelp } from './options';
import { say } from './out';

export const VERSION: string = (require('../../../package.json') as { version: string }).version;

function topHelp(): string {
  const lines = ['stasis — checkpoint/restore of Linux processes (CRIU-format images)', '', 'usage:'];
  for (const c of COMMANDS) lines.push(`  ${c.usage.padEnd(44)} ${c.summary.split('. ')[0].replace(/\.$/, '')}`);
  lines.push('  stasis --version', '', 'stasis COMMAND --help lists the options of a command.',
    'Images decode with crit (Debian package criu): crit decode -i DIR/core-PID.img');
  return lines.join('\n');
}

function reportError(e: unknown, json: boolean): number {
  if (e instanceof StasisError) {
    log.error(e.message);
    say(2, `stasis: ${e.message}`);
    if (json) say(1, JSON.stringify({ error: { code: e.code, message: e.message } }));
    return e.code === ErrorCodes.USAGE ? 2 : 1;
  }
  const msg = (e as Error)?.stack ?? String(e);
  log.error(`internal error: ${msg}`);
  say(2, `stasis: internal error: ${(e as Error)?.message ?? e} (a bug; the log file, with -o FILE -v4, tells more)`);
  if (process.env.STASIS_DEBUG) say(2, msg);
  if (json) say(1, JSON.stringify({ error: { code: ErrorCodes.INTERNAL, message: String((e as Error)?.message ?? e) } }));
  return 1;
}

export async function main(argv: string[]): Promise<number> {
  started.ms = process.uptime() * 1000;
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    console.log(topHelp());
    return name ? 0 : 2;
  }
  if (name === '--version' || name === '-V') {
    console.log(`stasis ${VERSION}`);
    return 0;
  }
  const cmd = COMMANDS.find((c) => c.name === name);
  const json = rest.includes('--json');
  try {
    if (!cmd) throw new StasisError(ErrorCodes.USAGE, `unknown command '${name}' (see stasis --help)`);
    const { values, positionals } = parseCommand(cmd, rest);
    if (values.help) {
      console.log(formatHelp(cmd));
      return 0;
    }
    return await cmd.run(values, positionals);
  } catch (e) {
    return reportError(e, json);
  } finally {
    closeLog();
  }
}
