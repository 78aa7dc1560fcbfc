// The commands that move a checkpoint over TCP: page-server (criu's), and
// migrate / migrate-receive. Addresses are numeric (IPv4 or IPv6; localhost
// is 127.0.0.1): a dump is synchronous from freeze to release and resolves
// no names.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { childProcess, net, nodeChildEnv } from '../node-lazy';
import { usageError, type CommandSpec, type OptionSpec, type Values } from './options';

export interface AsyncCommand extends CommandSpec {
  run(values: Values, positionals: string[]): number | Promise<number>;
}

const str = (v: Values, k: string) => v[k] as string | undefined;
const flag = (v: Values, k: string) => v[k] === true;
const MiB = (n: number) => (n / 1048576).toFixed(1);

/** A numeric address (localhost: 127.0.0.1), or a usage error naming `what`. */
export function numericAddress(a: string, what: string): string {
  const addr = a === 'localhost' ? '127.0.0.1' : a.replace(/^\[(.*)\]$/, '$1');
  if (!net().isIP(addr)) usageError(`${what} '${a}' is not a numeric IP address (names are not resolved)`);
  return addr;
}

export function portOf(v: unknown, what: string, zeroOk: boolean): number {
  const p = v as number | undefined;
  if (p === undefined) usageError(`${what} is needed`);
  if (p > 65535 || (!zeroOk && p === 0)) usageError(`invalid ${what} ${p}`);
  return p;
}

/** criu's --page-server --address A --port N of dump and pre-dump. */
export const PAGE_SERVER_OPTIONS: OptionSpec[] = [
  { long: 'page-server', type: 'flag', help: 'send the pages to a page server (stasis or criu page-server) at --address/--port; the other images are written in DIR' },
  { long: 'address', type: 'string', arg: 'ADDR', help: 'with --page-server: its numeric IP address; with dump --lazy-pages: where to listen (default 0.0.0.0)' },
  { long: 'port', type: 'int', arg: 'PORT', help: 'with --page-server: its port; with dump --lazy-pages: the port to serve on (0: any, printed)' },
];

/** dump --lazy-pages --port N [--address A]: where the dump serves the pages it leaves out (post-copy). */
export function lazySourceOf(v: Values): { address: string; port: number } | undefined {
  if (!flag(v, 'lazy-pages')) return undefined;
  if (flag(v, 'page-server')) usageError('--lazy-pages serves the pages itself: it does not go with --page-server');
  return { address: numericAddress(str(v, 'address') ?? '0.0.0.0', '--address'), port: portOf(v.port, '--port', true) };
}

/** restore --lazy-pages --page-server --address A --port N: where the lazy pages are fetched from (post-copy). */
export function lazyRemoteOf(v: Values): { address: string; port: number } | undefined {
  if (!flag(v, 'page-server')) {
    if (v.address !== undefined || v.port !== undefined) usageError('--address and --port go with --page-server');
    return undefined;
  }
  if (!flag(v, 'lazy-pages')) usageError('restore --page-server needs --lazy-pages (the pages are fetched as the tree runs)');
  const a = str(v, 'address');
  if (!a) usageError('--page-server needs --address');
  return { address: numericAddress(a, '--address'), port: portOf(v.port, '--port', false) };
}

/** The page server a dump or pre-dump sends to, from its options. */
export function pageServerOf(v: Values): { address: string; port: number } | undefined {
  if (!flag(v, 'page-server')) {
    if (flag(v, 'lazy-pages')) return undefined; // its --address/--port: lazySourceOf
    if (v.address !== undefined || v.port !== undefined) usageError('--address and --port go with --page-server');
    return undefined;
  }
  const a = str(v, 'address');
  if (!a) usageError('--page-server needs --address');
  return { address: numericAddress(a, '--address'), port: portOf(v.port, '--port', false) };
}

/** -d: run ourselves again, detached, without -d; print its readiness line and pid once it listens. */
async function daemonize(pidfile: string | undefined): Promise<number> {
  const args = process.argv.slice(1).filter((a) => a !== '-d' && a !== '--daemon');
  const child = childProcess().spawn(process.execPath, args, { detached: true, stdio: ['ignore', 'pipe', 'ignore'], env: nodeChildEnv() });
  const line = await new Promise<string | undefined>((resolve) => {
    let got = '';
    child.stdout!.on('data', (d: Buffer) => {
      got += d.toString();
      if (got.includes('\n')) resolve(got.slice(0, got.indexOf('\n')));
    });
    child.on('exit', () => resolve(undefined));
  });
  child.stdout!.destroy();
  child.unref();
  if (line === undefined) {
    console.error('stasis: page-server: the daemon exited before listening (run it without -d to see why)');
    return 1;
  }
  if (pidfile) fs.writeFileSync(pidfile, `${child.pid}\n`);
  process.stdout.write(`${line} pid ${child.pid}\n`);
  return 0;
}

export const pageServerCmd: AsyncCommand = {
  name: 'page-server',
  usage: 'stasis page-server -D DIR --port PORT [--address ADDR] [-d]',
  summary: 'Receive the pages of one dump or pre-dump (dump --page-server) over TCP into DIR, as criu\'s page server; exit when the sender ends the session. Put the sender\'s images next to them to restore.',
  options: [
    { long: 'images-dir', short: 'D', type: 'string', arg: 'DIR', help: 'where to write pagemap-PID.img and pages-N.img (created 0700)' },
    { long: 'address', type: 'string', arg: 'ADDR', help: 'numeric IP address to listen on (default 0.0.0.0)' },
    { long: 'port', type: 'int', arg: 'PORT', help: 'port to listen on (0: any; the line printed when listening tells which)' },
    { long: 'prev-images-dir', type: 'string', arg: 'DIR', help: 'the parent images here (relative to -D, as the dump\'s): an incremental dump may then refer pages to them' },
    { long: 'daemon', short: 'd', type: 'flag', help: 'run in the background once listening; print its pid' },
    { long: 'pidfile', type: 'string', arg: 'FILE', help: 'with -d: write the page server\'s pid to FILE' },
    { long: 'json', type: 'flag', help: 'print the result as one JSON object on stdout' },
  ],
  run(v) {
    const dir = str(v, 'images-dir');
    if (!dir) usageError('page-server needs -D DIR');
    const address = numericAddress(str(v, 'address') ?? '0.0.0.0', '--address');
    const port = portOf(v.port, '--port', true);
    if (flag(v, 'daemon')) return daemonize(str(v, 'pidfile'));
    const { runPageServer } = require('../pageserver/server') as typeof import('../pageserver/server');
    const r = runPageServer({
      dir, address, port, prevImagesDir: str(v, 'prev-images-dir'),
      // The readiness line, written at once (tests and scripts wait for it).
      onListening: (p) => fs.writeSync(1, `stasis page-server: listening on ${address.includes(':') ? `[${address}]` : address}:${p}\n`),
    });
    const line = `stasis page-server: received ${r.pages} pages (${MiB(r.bytes)} MiB) of ${r.processes} process(es) from ${r.peer} into ${path.resolve(r.dir)}`;
    if (flag(v, 'json')) fs.writeSync(1, JSON.stringify(r) + '\n');
    console.error(line);
    return 0;
  },
};

function lockMethod(m: string | undefined): 'nftables' | 'iptables' | 'skip' | undefined {
  if (m !== undefined && !['nftables', 'iptables', 'skip'].includes(m)) usageError(`invalid --network-lock '${m}' (nftables, iptables or skip)`);
  return m as 'nftables' | 'iptables' | 'skip' | undefined;
}

/** HOST:PORT (numeric; [v6]:PORT). */
function hostPort(s: string): { address: string; port: number } {
  const m = /^(.*):(\d+)$/.exec(s);
  if (!m) usageError(`--to '${s}' is not HOST:PORT`);
  return { address: numericAddress(m[1], '--to'), port: portOf(Number(m[2]), '--to port', false) };
}

export const migrateCmd: AsyncCommand = {
  name: 'migrate',
  usage: 'stasis migrate -t PID --to HOST:PORT [--rounds K | --lazy] [--tcp-established]',
  summary: 'Move process PID and its descendants to the stasis migrate-receive at HOST:PORT over TCP: K pre-dumps while they run, the final dump, restore there; the tree here is killed only once the receiver holds the verified checkpoint. Prints the downtime.',
  options: [
    { long: 'tree', short: 't', type: 'int', arg: 'PID', what: 'pid', help: 'the root of the tree to move' },
    { long: 'to', type: 'string', arg: 'HOST:PORT', help: 'the receiver (numeric address)' },
    { long: 'rounds', type: 'int', arg: 'K', help: 'pre-dumps before the final dump (default 1; 0 with --lazy)' },
    { long: 'lazy', type: 'flag', help: 'post-copy: the tree runs there at once and pulls its private memory from here (on fault, and streamed) while the tree here stays frozen; killed here once every page is there (no pre-dumps)' },
    { long: 'tcp-established', type: 'flag', help: 'take established TCP connections (TCP_REPAIR)' },
    { long: 'network-lock', type: 'string', arg: 'METHOD', help: 'as dump\'s: nftables, iptables or skip (no lock: the peers of the connections must stay silent until the restore)' },
    { long: 'external', type: 'string', multiple: true, arg: 'net[INODE]:KEY', help: 'as dump --external: e.g. the tree\'s network namespace, joined there (migrate-receive --join-ns)' },
    { long: 'images-dir', short: 'D', type: 'string', arg: 'DIR', help: 'keep the local images here (default: a temporary directory, removed after a success)' },
    { long: 'json', type: 'flag', help: 'print the result as one JSON object on stdout' },
  ],
  run(v) {
    const pid = v.tree as number | undefined;
    if (pid === undefined || pid <= 0) usageError('migrate needs -t PID');
    const to = str(v, 'to');
    if (!to) usageError('migrate needs --to HOST:PORT');
    const lazy = flag(v, 'lazy');
    const rounds = (v.rounds as number | undefined) ?? (lazy ? 0 : 1);
    if (lazy && rounds) usageError('--lazy makes no pre-dumps: it does not go with --rounds');
    const { migrate } = require('../pageserver/migrate') as typeof import('../pageserver/migrate');
    const r = migrate(pid, {
      to: hostPort(to), rounds, tcpEstablished: flag(v, 'tcp-established'), networkLock: lockMethod(str(v, 'network-lock')), external: (v.external as string[] | undefined) ?? [],
      workDir: str(v, 'images-dir'), say: (l) => console.error(l), lazy,
    });
    if (flag(v, 'json')) fs.writeSync(1, JSON.stringify(r) + '\n');
    const fin = r.rounds.at(-1)!;
    if (r.lazy) {
      console.error(`migrated pid ${pid} to ${to} (restored pid ${r.restoredPid}) post-copy: final dump ${fin.pages} pages, ${r.lazy.pages} pulled after the restore in ${r.lazy.requests} requests; downtime ${r.downtimeMs.toFixed(1)} ms (frozen here → running there)`);
      return 0;
    }
    console.error(`migrated pid ${pid} to ${to} (restored pid ${r.restoredPid}) after ${r.rounds.length - 1} pre-dump(s); final dump ${fin.pages} pages; downtime ${r.downtimeMs.toFixed(1)} ms (frozen here → running there)`);
    return 0;
  },
};

export const migrateReceiveCmd: AsyncCommand = {
  name: 'migrate-receive',
  usage: 'stasis migrate-receive -D DIR --port PORT [--address ADDR] [--join-ns net:PATH]',
  summary: 'Receive one stasis migrate over TCP into DIR (DIR/1.., DIR/final), verify each round, restore the tree here and exit.',
  options: [
    { long: 'images-dir', short: 'D', type: 'string', arg: 'DIR', help: 'where the rounds go (a fresh directory; created 0700)' },
    { long: 'address', type: 'string', arg: 'ADDR', help: 'numeric IP address to listen on (default 0.0.0.0)' },
    { long: 'port', type: 'int', arg: 'PORT', help: 'port to listen on (0: any; the line printed when listening tells which)' },
    { long: 'join-ns', type: 'string', multiple: true, arg: 'net:PATH', help: 'as restore --join-ns: restore the tree into this network namespace' },
    { long: 'json', type: 'flag', help: 'print the result as one JSON object on stdout' },
  ],
  run(v) {
    const dir = str(v, 'images-dir');
    if (!dir) usageError('migrate-receive needs -D DIR');
    const address = numericAddress(str(v, 'address') ?? '0.0.0.0', '--address');
    const port = portOf(v.port, '--port', true);
    const { migrateReceive } = require('../pageserver/migrate') as typeof import('../pageserver/migrate');
    const r = migrateReceive({
      dir, address, port, joinNs: (v['join-ns'] as string[] | undefined) ?? [], say: (l) => console.error(l),
      onListening: (p) => fs.writeSync(1, `stasis migrate-receive: listening on ${address.includes(':') ? `[${address}]` : address}:${p}\n`),
    });
    if (flag(v, 'json')) fs.writeSync(1, JSON.stringify(r) + '\n');
    console.error(`migrate-receive: restored pid ${r.restoredPid} from ${r.peer} in ${r.restoreMs?.toFixed(1)} ms${r.lazyPages !== undefined ? `; every lazy page in (${r.lazyPages} pulled)` : ''}`);
    return 0;
  },
};
