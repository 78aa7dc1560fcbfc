// bin/criu: stasis under criu's name, for the tools that drive criu (runc
// `--criu PATH`, podman and runc ≥ 1.2 through PATH). What they run:
// `criu swrk FD` (everything: the RPC server), and in their scripts and
// tests `criu --version` and `criu check [--feature F]`. Nothing else of
// criu's command line is provided (the `stasis` command is that).
import * as fs from 'node:fs';
import { StasisError } from '../errors';
import { checkFeatures } from '../check';
import { serve, CRIU_VERSION } from './server';

/** `criu check --feature NAME` (criu's names): the ones stasis has, and why not the others. */
const SUPPORTED = new Set(['external_net_ns']);
/** Not (yet) stasis's. */
const FEATURES: Record<string, string> = {
  mem_dirty_track: 'no incremental dumps (and no soft-dirty tracking on this kernel)',
  uffd: 'no lazy pages',
  'uffd-noncoop': 'no lazy pages',
  pidfd_store: 'no pidfd store',
};

/** Straight to the fd: process.stdout would make a shared pipe non-blocking under its other users. */
function say(fd: 1 | 2, text: string): void {
  try { fs.writeSync(fd, text + '\n'); } catch { /* closed */ }
}

function criuCheck(args: string[]): number {
  const i = args.indexOf('--feature');
  if (i >= 0) {
    const names = (args[i + 1] ?? '').split(',').filter(Boolean);
    if (!names.length) { say(2, 'criu check --feature: which feature?'); return 1; }
    if (names.includes('list')) { say(1, [...SUPPORTED].join(' ')); return 0; }
    const missing = names.filter((n) => !SUPPORTED.has(n));
    for (const n of missing) say(2, `Warn: ${n} is not supported by stasis: ${FEATURES[n] ?? 'unknown feature'}`);
    if (missing.length) return 1;
    say(1, `${names.join(', ')} is supported`);
    return 0;
  }
  const missing = checkFeatures().filter((f) => f.needed && !f.ok);
  for (const f of missing) say(2, `Error: ${f.name}: ${f.detail}`);
  if (missing.length) return 1;
  say(1, 'Looks good.');
  return 0;
}

export function criuMain(argv: string[]): number {
  const [cmd, ...rest] = argv;
  if (cmd === '--version' || cmd === '-V') {
    say(1, `Version: ${CRIU_VERSION.major}.${CRIU_VERSION.minor}`);
    return 0;
  }
  if (cmd === 'check') return criuCheck(rest);
  if (cmd === 'swrk') {
    const fd = Number(rest[0]);
    if (rest.length !== 1 || !/^\d+$/.test(rest[0] ?? '')) { say(2, 'usage: criu swrk FD'); return 1; }
    try {
      return serve(fd);
    } catch (e) {
      // Not a socket we can serve: nobody to answer but stderr (not a container's yet).
      say(2, `criu (stasis): ${e instanceof StasisError ? e.message : (e as Error)?.message ?? e}`);
      return 1;
    }
  }
  say(2, `criu (stasis): '${cmd ?? ''}' is not provided: this criu serves \`criu swrk FD\` (runc, podman), \`criu check\` and \`criu --version\`; use the stasis command for dumps and restores`);
  return 1;
}
