// The command line: stasis dump | show | check (| restore | demo).
import { parseArgs } from 'node:util';
import { dump } from './dump/dump';
import { readCheckpoint, formatShow } from './show';
import { checkFeatures } from './check';
import { restore } from './restore/restore';
import { waitRestored } from './restore/tree';
import { runDemo } from './demo';
import { StasisError, ErrorCodes } from './errors';

const HELP = `stasis — checkpoint/restore of Linux processes (CRIU-format images)

usage:
  stasis dump -t PID -D DIR [-R]     checkpoint process PID into DIR
      -t, --tree PID                 the process to dump (with its threads)
      -D, --images-dir DIR           where to write images (created, 0700)
      -R, --leave-running            let the process go on (default: kill it after a successful dump)
      --tcp-established              take established TCP connections too (TCP_REPAIR)
      --ghost-limit BYTES            largest deleted-but-open file to put in the images (default 1 MiB)
      -j, --shell-job                the process runs on the shell's terminal (restore with -j too)
      --ext-unix-sk                  unix datagram sockets connected outside the tree: connect to the
                                     peer's name again on restore
  stasis restore -D DIR [-d]         bring a dumped process back (same PID)
      -D, --images-dir DIR           the checkpoint
      -d, --restore-detached         leave it running and exit 0 (default: wait for it
                                     as its parent and exit with its status)
      --skip-file-check              restore even if a file changed size since the dump
      -j, --shell-job                give terminal fds stasis's own terminal
  stasis demo                        checkpoint a sample program, kill it, restore it
  stasis show DIR [--json]           summarise a checkpoint
  stasis check [--json]              which needed kernel features are present
  stasis --help

Images decode with crit (Debian package criu): crit decode -i DIR/core-PID.img`;

function usage(msg: string): never {
  throw new StasisError(ErrorCodes.USAGE, `${msg}\n(see stasis --help)`);
}

async function run(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (!cmd || cmd === '--help' || cmd === '-h' || cmd === 'help') {
    console.log(HELP);
    return cmd ? 0 : 2;
  }
  switch (cmd) {
    case 'dump': {
      const { values } = parseArgs({
        args: rest,
        options: {
          tree: { type: 'string', short: 't' },
          'images-dir': { type: 'string', short: 'D' },
          'leave-running': { type: 'boolean', short: 'R', default: false },
          'tcp-established': { type: 'boolean', default: false },
          'ghost-limit': { type: 'string' },
          'shell-job': { type: 'boolean', short: 'j', default: false },
          'ext-unix-sk': { type: 'boolean', default: false },
        },
      });
      if (!values.tree) usage('dump needs -t PID');
      const ghostLimit = values['ghost-limit'] === undefined ? undefined : Number(values['ghost-limit']);
      if (ghostLimit !== undefined && !(Number.isInteger(ghostLimit) && ghostLimit >= 0)) usage(`invalid --ghost-limit '${values['ghost-limit']}'`);
      if (!values['images-dir']) usage('dump needs -D DIR');
      const pid = Number(values.tree);
      if (!Number.isInteger(pid) || pid <= 0) usage(`invalid pid '${values.tree}'`);
      const r = dump(pid, {
        dir: values['images-dir'], leaveRunning: values['leave-running'] ?? false, tcpEstablished: values['tcp-established'], ghostLimit, shellJob: values['shell-job'], extUnixSk: values['ext-unix-sk'],
        failAt: process.env.STASIS_FAIL_AT || undefined,
      });
      console.error(`dumped pid ${r.pid} (${r.processes} process${r.processes > 1 ? 'es' : ''}, ${r.threads} thread${r.threads > 1 ? 's' : ''}): ${r.pages} pages (${(r.bytes / 1048576).toFixed(1)} MiB) in ${r.ms.toFixed(1)} ms, frozen ${r.frozenMs.toFixed(1)} ms; ${values['leave-running'] ? 'left running' : 'killed'}`);
      return 0;
    }
    case 'restore': {
      const { values } = parseArgs({
        args: rest,
        options: {
          'images-dir': { type: 'string', short: 'D' },
          'restore-detached': { type: 'boolean', short: 'd', default: false },
          'skip-file-check': { type: 'boolean', default: false },
          'shell-job': { type: 'boolean', short: 'j', default: false },
          // Accepted for criu compatibility: connections in the images are always restored.
          'tcp-established': { type: 'boolean', default: false },
        },
      });
      if (!values['images-dir']) usage('restore needs -D DIR');
      const r = restore({
        dir: values['images-dir'], detach: values['restore-detached'] ?? false,
        skipFileCheck: values['skip-file-check'], shellJob: values['shell-job'], failAt: process.env.STASIS_FAIL_AT || undefined,
      });
      for (const w of r.warnings) console.error(`stasis: warning: ${w}`);
      console.error(`restored pid ${r.pid}${r.processes > 1 ? ` and ${r.processes - 1} descendant(s)` : ""} in ${r.ms.toFixed(1)} ms`);
      if (values['restore-detached']) return 0;
      const st = waitRestored(r.pid);
      return st.signal !== undefined ? 128 + st.signal : st.code ?? 0;
    }
    case 'demo':
      return runDemo();
    case 'show': {
      const { values, positionals } = parseArgs({ args: rest, allowPositionals: true, options: { json: { type: 'boolean', default: false } } });
      if (positionals.length !== 1) usage('show needs one DIR');
      const d = readCheckpoint(positionals[0]);
      console.log(values.json ? JSON.stringify(d, null, 2) : formatShow(d));
      return 0;
    }
    case 'check': {
      const { values } = parseArgs({ args: rest, options: { json: { type: 'boolean', default: false } } });
      const f = checkFeatures();
      if (values.json) console.log(JSON.stringify(f, null, 2));
      else for (const x of f) console.log(`${x.ok ? 'ok  ' : x.needed ? 'MISS' : 'no  '} ${x.name}${x.ok ? '' : `: ${x.detail}`}`);
      return f.some((x) => x.needed && !x.ok) ? 1 : 0;
    }
    default:
      usage(`unknown command '${cmd}'`);
  }
}

export async function main(argv: string[]): Promise<number> {
  try {
    return await run(argv);
  } catch (e) {
    if (e instanceof StasisError) {
      console.error(`stasis: ${e.message}`);
      return e.code === ErrorCodes.USAGE ? 2 : 1;
    }
    if (e && typeof e === 'object' && 'code' in e && String((e as { code: unknown }).code).startsWith('ERR_PARSE_ARGS')) {
      console.error(`stasis: ${(e as unknown as Error).message}`);
      return 2;
    }
    console.error(`stasis: internal error: ${(e as Error)?.stack ?? e}`);
    return 1;
  }
}
