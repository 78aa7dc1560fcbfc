// The firewall side of the network lock (netlock.ts): nftables tables and
// iptables chains that drop the packets of given TCP connections, how they
// are named, found again and removed. Everything of ours is named after a
// lock id (12 hex digits) and carries a comment "stasis pid=P images=DIR":
//
//   nft  table inet stasis-ID-dumping   held by a running dump (flags owner:
//                                       the kernel deletes it when that dump's
//                                       nft process, and so the dump, is gone)
//   nft  table inet stasis-ID           a dump's lock, kept for its restore
//   iptables/ip6tables chains STASIS-ID-IN, STASIS-ID-OUT (filter table),
//        jumped to from INPUT and OUTPUT
//
// Nothing else is ever touched (no flush, no other table or chain).
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { childProcess } from '../node-lazy';
import { pipe, waitReadable, sysTry } from '../sys';
import { StasisError, ErrorCodes } from '../errors';

export type LockMethod = 'nftables' | 'iptables';

/** One dumped connection, as the firewall sees it (addresses as text; a v4-mapped IPv6 one as IPv4). */
export interface Conn { v6: boolean; local: string; lport: number; peer: string; pport: number }

export const LOCK_ID = /^[0-9a-f]{1,32}$/;
export const tableName = (id: string, dumping = false): string => `stasis-${id}${dumping ? '-dumping' : ''}`;
const chainName = (id: string, dir: 'IN' | 'OUT'): string => `STASIS-${id}-${dir}`;

function lockError(msg: string): StasisError {
  return new StasisError(ErrorCodes.NETWORK_LOCK, msg);
}

/** nft keeps at most 128 characters of a comment: a long images path keeps its tail, marked "...". */
const COMMENT_MAX = 128;

export function lockComment(pid: number, imagesDir: string): string {
  const head = `stasis pid=${pid} images=`;
  let dir = imagesDir.replace(/["\\]|[^\x20-\x7e]/g, '?');
  if (head.length + dir.length > COMMENT_MAX) dir = `...${dir.slice(-(COMMENT_MAX - head.length - 3))}`;
  return head + dir;
}

/** What a lock's comment tells: the dumper's pid, and its images directory unless the comment cut it. */
export function parseComment(c: string): { pid?: number; images?: string } {
  const m = /^stasis pid=(\d+) images=(.*)$/.exec(c);
  if (!m) return {};
  return { pid: Number(m[1]), images: m[2].startsWith('...') || m[2].includes('?') ? undefined : m[2] };
}

/**
 * Where the rules go: our network namespace, or (a tree with a network
 * namespace of its own) that of process `netns`, entered by util-linux nsenter.
 */
export type NetNs = number | undefined;

function inNs(netns: NetNs, cmd: string, args: string[]): [string, string[]] {
  return netns === undefined ? [cmd, args] : ['nsenter', [`--net=/proc/${netns}/ns/net`, cmd, ...args]];
}

function run(cmd: string, args: string[], input?: string, netns?: NetNs): { ok: boolean; missing: boolean; out: string; err: string } {
  const r = childProcess().spawnSync(...inNs(netns, cmd, args), { input, encoding: 'utf8', timeout: 60000, stdio: ['pipe', 'pipe', 'pipe'] });
  const missing = (r.error as NodeJS.ErrnoException | undefined)?.code === 'ENOENT';
  const err = r.error ? r.error.message : (r.stderr ?? '').trim().split('\n')[0] ?? '';
  return { ok: !r.error && r.status === 0, missing, out: r.stdout ?? '', err };
}

// ---------------------------------------------------------------- nftables

/**
 * One element per connection, PEER . PPORT . LOCAL . LPORT: input drops what
 * comes from the peer, output what goes to it. On loopback the peer's packets
 * are then dropped at input, as on a wire (the peer retransmits on its RTO),
 * not refused at its own output.
 */
function nftElement(c: Conn): string { return `${c.peer} . ${c.pport} . ${c.local} . ${c.lport}`; }

export function nftAddElements(name: string, conns: Conn[]): string[] {
  const out: string[] = [];
  for (const v6 of [false, true]) {
    const these = conns.filter((c) => c.v6 === v6);
    if (these.length) out.push(`add element inet ${name} conns${v6 ? 6 : 4} { ${these.map(nftElement).join(', ')} }`);
  }
  return out;
}

/** The commands of a whole lock table (one transaction when given together). */
export function nftTable(name: string, comment: string, conns: Conn[], owner: boolean): string[] {
  const t = `inet ${name}`;
  return [
    `add table ${t} { ${owner ? 'flags owner; ' : ''}comment "${comment}"; }`,
    `add set ${t} conns4 { type ipv4_addr . inet_service . ipv4_addr . inet_service; }`,
    `add set ${t} conns6 { type ipv6_addr . inet_service . ipv6_addr . inet_service; }`,
    `add chain ${t} input { type filter hook input priority filter; policy accept; }`,
    `add chain ${t} output { type filter hook output priority filter; policy accept; }`,
    `add rule ${t} input ip saddr . tcp sport . ip daddr . tcp dport @conns4 drop`,
    `add rule ${t} input ip6 saddr . tcp sport . ip6 daddr . tcp dport @conns6 drop`,
    `add rule ${t} output ip daddr . tcp dport . ip saddr . tcp sport @conns4 drop`,
    `add rule ${t} output ip6 daddr . tcp dport . ip6 saddr . tcp sport @conns6 drop`,
    ...nftAddElements(name, conns),
  ];
}

/** Run nft commands as one transaction (`nft -f -`). */
export function nftApply(commands: string[]): void {
  const r = run('nft', ['-f', '-'], commands.join('\n') + '\n');
  if (!r.ok) throw lockError(`nft: ${r.err}`);
}

/**
 * A long-lived `nft -i` of ours, fed through a pipe: an owner table made
 * through it lives as long as this process's netlink socket, so a dump that
 * dies (SIGKILL included) takes its lock with it. Each command is followed by
 * a marker line (a syntax error naming a sequence number): once nft has
 * complained about the marker, the command before it was applied, or its
 * error printed.
 */
export class NftSession {
  private seq = 0;
  private readonly buf = Buffer.alloc(65536);

  private constructor(readonly child: ChildProcess, private stdin: number, private out: number) {}

  static start(netns?: NetNs): NftSession {
    const inp = pipe(), out = pipe();
    let child: ChildProcess;
    try {
      // HOME: nft -i keeps a history in $HOME/.nft.history; ours goes nowhere.
      child = childProcess().spawn(...inNs(netns, 'nft', ['-i']), { stdio: [inp.r, out.w, out.w], env: { ...process.env, HOME: '/dev/null' } });
    } finally {
      sysTry('close', inp.r);
      sysTry('close', out.w);
    }
    child.on('error', () => { /* a missing nft shows as no pid, below */ });
    if (child.pid === undefined) {
      sysTry('close', inp.w);
      sysTry('close', out.r);
      throw lockError('nft: not found');
    }
    return new NftSession(child, inp.w, out.r);
  }

  /** Run one line of commands (one transaction); throws with nft's error. */
  run(line: string, timeoutMs = 30000): void {
    const mark = `stasis-sync-${++this.seq}`;
    try {
      fs.writeSync(this.stdin, `${line}\n${mark}\n`);
    } catch (e) {
      throw lockError(`nft: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message} (nft -i exited?)`);
    }
    const done = new RegExp(`^${mark}\\n[ \\t]*\\^+\\n`, 'm');
    const end = Date.now() + timeoutMs;
    let text = '';
    let m: RegExpExecArray | null;
    while (!(m = done.exec(text))) {
      if (!waitReadable(this.out, end - Date.now())) throw lockError(`nft: no answer in ${timeoutMs} ms`);
      const n = fs.readSync(this.out, this.buf);
      if (n === 0) throw lockError(`nft -i exited${text.trim() ? `: ${text.trim().split('\n')[0]}` : ''}`);
      text += this.buf.toString('utf8', 0, n);
    }
    // Our marker's own complaint starts at the last "Error:" before it.
    const answer = text.slice(0, text.lastIndexOf('Error:', m.index));
    const err = /^Error: (.*)$/m.exec(answer);
    if (err) throw lockError(`nft: ${err[1]}`);
  }

  /** End nft (EOF on its input) and wait for it to go. */
  close(timeoutMs = 5000): void {
    if (this.stdin < 0) return;
    sysTry('close', this.stdin);
    this.stdin = -1;
    const end = Date.now() + timeoutMs;
    while (waitReadable(this.out, end - Date.now()) && fs.readSync(this.out, this.buf) > 0) { /* drain until EOF */ }
    sysTry('close', this.out);
    this.out = -1;
    // Still referenced: our event loop reaps it before stasis exits.
  }
}

// ---------------------------------------------------------------- iptables

const iptables = (v6: boolean): string => (v6 ? 'ip6tables' : 'iptables');

function iptRestore(v6: boolean, lines: string[], netns: NetNs): void {
  const r = run(`${iptables(v6)}-restore`, ['-w', '--noflush'], ['*filter', ...lines, 'COMMIT', ''].join('\n'), netns);
  if (!r.ok) throw lockError(`${iptables(v6)}-restore: ${r.err}`);
}

/** The chains of a lock and the jumps to them (CRIU's rule shape, in chains of ours). */
export function iptChains(id: string, comment: string): string[] {
  return [
    `:${chainName(id, 'IN')} - [0:0]`, `:${chainName(id, 'OUT')} - [0:0]`,
    `-I INPUT -m comment --comment "${comment}" -j ${chainName(id, 'IN')}`,
    `-I OUTPUT -m comment --comment "${comment}" -j ${chainName(id, 'OUT')}`,
  ];
}

export function iptRules(id: string, c: Conn): string[] {
  return [
    `-A ${chainName(id, 'IN')} -p tcp -s ${c.peer} -d ${c.local} --sport ${c.pport} --dport ${c.lport} -j DROP`,
    `-A ${chainName(id, 'OUT')} -p tcp -s ${c.local} -d ${c.peer} --sport ${c.lport} --dport ${c.pport} -j DROP`,
  ];
}

/** Lock more connections of one family (creating the chains with the first). */
export function iptLock(v6: boolean, id: string, comment: string, conns: Conn[], create: boolean, netns?: NetNs): void {
  iptRestore(v6, [...(create ? iptChains(id, comment) : []), ...conns.flatMap((c) => iptRules(id, c))], netns);
}

/** Remove lock `id`'s chains and the jumps to them; false when there were none. */
export function iptUnlock(v6: boolean, id: string, netns?: NetNs): boolean {
  const r = run(iptables(v6), ['-w', '-S'], undefined, netns);
  if (!r.ok) {
    if (r.missing) return false;
    throw lockError(`${iptables(v6)} -S: ${r.err}`);
  }
  const lines = r.out.split('\n');
  const ours = new RegExp(`^-A (?:INPUT|OUTPUT) .*-j (STASIS-${id}-(?:IN|OUT))$`);
  const jumps = lines.filter((l) => ours.test(l)).map((l) => `-D${l.slice(2)}`);
  const chains = lines.map((l) => new RegExp(`^-N (STASIS-${id}-(?:IN|OUT))$`).exec(l)?.[1]).filter((c): c is string => !!c);
  if (!jumps.length && !chains.length) return false;
  iptRestore(v6, [...jumps, ...chains.flatMap((c) => [`-F ${c}`, `-X ${c}`])], netns);
  return true;
}

const STASIS_BIN = path.resolve(__dirname, '..', '..', '..', 'bin', 'stasis.js');

/**
 * iptables has no owner: a watchdog (its own session, so a signal to ours
 * does not reach it) waits for a line from us. EOF (we died before saying
 * anything) makes it clear the lock with `stasis netlock --clear --id ID`
 * (in the namespace of the lock).
 */
export class Watchdog {
  private constructor(private w: number) {}

  static start(id: string, netns?: NetNs): Watchdog {
    const p = pipe();
    try {
      const clear = inNs(netns, process.execPath, [STASIS_BIN, 'netlock', '--clear', '--id', id]).flat();
      const child = childProcess().spawn('/bin/sh', ['-c', 'read -r w || exec "$@" >/dev/null 2>&1', 'stasis-netlock-watchdog', ...clear],
        { detached: true, stdio: [p.r, 'ignore', 'ignore'] });
      // Kept referenced: once disarmed it exits at once, and our event loop reaps it before we exit.
      child.on('error', () => { /* no sh: the documented clear is left */ });
    } finally {
      sysTry('close', p.r);
    }
    return new Watchdog(p.w);
  }

  /** The lock is in good hands (removed, or kept for a restore): the watchdog leaves it. */
  disarm(): void {
    if (this.w < 0) return;
    try { fs.writeSync(this.w, 'keep\n'); } catch { /* it is gone already */ }
    this.close();
  }

  /** Close our end: an armed watchdog then clears the lock. */
  close(): void {
    if (this.w >= 0) sysTry('close', this.w);
    this.w = -1;
  }
}

// ---------------------------------------------------------------- finding and removing

export interface FoundLock {
  method: LockMethod;
  id: string;
  /** What to name to the firewall tools (table, or chains). */
  name: string;
  /** An nft owner table: held by a running dump, gone with it. */
  owned: boolean;
  pid?: number;
  images?: string;
}

function findNft(): FoundLock[] {
  const r = run('nft', ['list', 'tables']);
  if (!r.ok) return [];
  const out: FoundLock[] = [];
  for (const m of r.out.matchAll(/^table inet (stasis-([0-9a-f]+)(-dumping)?)$/gm)) {
    const t = run('nft', ['-t', 'list', 'table', 'inet', m[1]]);
    if (!t.ok) continue; // gone meanwhile
    const comment = /^\s*comment "([^"]*)"$/m.exec(t.out)?.[1] ?? '';
    out.push({ method: 'nftables', id: m[2], name: `inet ${m[1]}`, owned: /^\s*flags owner$/m.test(t.out), ...parseComment(comment) });
  }
  return out;
}

function findIpt(): FoundLock[] {
  const byId = new Map<string, FoundLock>();
  for (const v6 of [false, true]) {
    const r = run(iptables(v6), ['-w', '-S']);
    if (!r.ok) continue;
    for (const m of r.out.matchAll(/^-N STASIS-([0-9a-f]+)-(?:IN|OUT)$/gm)) {
      if (!byId.has(m[1])) byId.set(m[1], { method: 'iptables', id: m[1], name: `chains STASIS-${m[1]}-IN/OUT`, owned: false });
    }
    for (const m of r.out.matchAll(/^-A (?:INPUT|OUTPUT) -m comment --comment "([^"]*)" -j STASIS-([0-9a-f]+)-(?:IN|OUT)$/gm)) {
      const l = byId.get(m[2]);
      if (l && l.pid === undefined) Object.assign(l, parseComment(m[1]));
    }
  }
  return [...byId.values()];
}

/** Every lock of ours in this network namespace. */
export function findLocks(): FoundLock[] {
  return [...findNft(), ...findIpt()];
}

/** Remove lock `id` (the kept nft table and iptables chains); what was removed. */
export function removeLock(id: string): string[] {
  if (!LOCK_ID.test(id)) throw new StasisError(ErrorCodes.USAGE, `invalid network lock id '${id}'`);
  const done: string[] = [];
  const r = run('nft', ['delete', 'table', 'inet', tableName(id)]);
  if (r.ok) done.push(`nftables table inet ${tableName(id)}`);
  else if (!r.missing && !/No such file or directory/.test(r.err)) throw lockError(`nft delete table inet ${tableName(id)}: ${r.err}`);
  for (const v6 of [false, true]) if (iptUnlock(v6, id)) done.push(`${iptables(v6)} chains ${chainName(id, 'IN')}, ${chainName(id, 'OUT')}`);
  return done;
}
