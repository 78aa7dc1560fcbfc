// The network lock (criu --network-lock): the packets of dumped TCP
// connections are dropped, not answered, from just before a connection's
// queues are read (a socket in repair mode still receives and acknowledges
// data: what came after the read would be lost) until the restored socket
// is live again. The peer sees silence, retransmits, and loses nothing; it
// never sees a reset.
//
// What survives what:
//  - while a dump runs, the lock is an nft owner table held by our `nft -i`
//    (or iptables chains with a watchdog): a dump that fails, runs with -R,
//    or is killed (SIGKILL too) leaves nothing behind;
//  - a dump that succeeds and kills the tree hands it over, before the
//    kill, to a kept lock (table inet stasis-ID; iptables: the same chains,
//    the watchdog disarmed), named in inventory.img (network_lock_method,
//    dump_criu_run_id = ID), which waits for the restore;
//  - a tree with a network namespace of its own is locked in that namespace
//    (its connections' packets flow there), and nothing is kept: the
//    namespace goes with the tree, and with it anything that could answer
//    the peer (restore makes a new one);
//  - restore removes it once every socket is rebuilt, just before they leave
//    repair mode and the tasks run (CRIU's order); a failed or killed
//    restore leaves it for the next attempt. `stasis netlock --clear` drops
//    kept locks whose checkpoint is gone; `-D DIR` one checkpoint's.
import * as crypto from 'node:crypto';
import * as path from 'node:path';
import { abi } from '../sys';
import { StasisError, ErrorCodes } from '../errors';
import { NETWORK_LOCK } from '../images/criu';
import { readImage, type Msg } from '../images/image';
import { defineUnit } from '../unit/unit';
import type { DumpCtx } from '../unit/dump-ctx';
import { log } from '../log';
import { namespacesUnit } from './ns/namespaces';
import { externalNetKey } from './ns/net-external';
import { nsId } from '../proc/ns';
import {
  type Conn, type LockMethod, type FoundLock, LOCK_ID, tableName, lockComment, nftTable, nftAddElements, nftApply,
  NftSession, iptLock, iptUnlock, Watchdog, findLocks, removeLock,
} from './netlock-rules';

export type { Conn } from './netlock-rules';
type Method = LockMethod | 'skip';

const { AF } = abi;
const METHOD_OF: Record<number, Method> = { [NETWORK_LOCK.IPTABLES]: 'iptables', [NETWORK_LOCK.NFTABLES]: 'nftables', [NETWORK_LOCK.SKIP]: 'skip' };
const CODE_OF: Record<Method, number> = { iptables: NETWORK_LOCK.IPTABLES, nftables: NETWORK_LOCK.NFTABLES, skip: NETWORK_LOCK.SKIP };

interface DumpState {
  id: string;
  /** The method in use, once the first connection is locked. */
  method?: Method;
  conns: Conn[];
  nft?: NftSession;
  /** iptables: the families whose chains exist, and the watchdog. */
  ipt?: { v4: boolean; v6: boolean; watchdog: Watchdog };
  comment: string;
  /** The tree's own network namespace (its root's pid), where the lock goes; else ours. */
  netns?: number;
  /** Why nftables was passed over (auto), for the error if iptables fails too. */
  nftFailed?: string;
}

/** Address words as CRIU stores them (raw network-order bytes, read little-endian) → text; a v4-mapped IPv6 one as IPv4. */
function addrText(family: number, words: number[]): { v6: boolean; text: string } {
  const b = Buffer.alloc(words.length * 4);
  words.forEach((w, i) => b.writeUInt32LE(w >>> 0, i * 4));
  if (family === AF.INET) return { v6: false, text: [...b.subarray(0, 4)].join('.') };
  if (b.subarray(0, 12).equals(Buffer.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]))) return { v6: false, text: [...b.subarray(12, 16)].join('.') };
  return { v6: true, text: (b.toString('hex').match(/.{4}/g) ?? []).join(':') };
}

export function connOf(family: number, local: { port: number; words: number[] }, peer: { port: number; words: number[] }): Conn {
  const l = addrText(family, local.words), p = addrText(family, peer.words);
  return { v6: l.v6, local: l.text, lport: local.port, peer: p.text, pport: peer.port };
}

function startNft(st: DumpState): void {
  const s = NftSession.start(st.netns);
  try {
    s.run(nftTable(tableName(st.id, true), st.comment, [], true).join('; '));
  } catch (e) {
    s.close();
    throw e;
  }
  st.nft = s;
}

function startIpt(st: DumpState): void {
  // Armed before the first rule exists: no moment where a death of ours leaves rules.
  st.ipt = { v4: false, v6: false, watchdog: Watchdog.start(st.id, st.netns) };
}

/** The first connection: take the method asked for, or the first that works (nftables, then iptables). */
function start(ctx: DumpCtx, st: DumpState): void {
  const want = ctx.opts.networkLock;
  st.comment = lockComment(process.pid, path.resolve(ctx.opts.dir));
  if (ctx.state(namespacesUnit).own.has('net')) st.netns = ctx.processes[0].pid;
  if (want === 'skip') { st.method = 'skip'; return; }
  // A namespace that outlives the tree (--external net[...]) would need a lock
  // kept in it until the restore; the lock here dies with the dump.
  if (st.netns !== undefined && externalNetKey(ctx.opts.external ?? [], nsId(st.netns, 'net')) !== undefined) {
    throw new StasisError(ErrorCodes.NETWORK_LOCK, 'the tree\'s network namespace is external (--external net[...]): no lock can be kept in it until the restore');
  }
  if (want === 'iptables') { startIpt(st); st.method = 'iptables'; return; }
  try {
    startNft(st);
    st.method = 'nftables';
  } catch (e) {
    if (want === 'nftables') throw e;
    st.nftFailed = (e as Error).message;
    log.info(`network lock: nftables unusable (${st.nftFailed}); trying iptables`);
    startIpt(st);
    st.method = 'iptables';
  }
}

function lockIpt(st: DumpState, c: Conn): void {
  const ipt = st.ipt!;
  const fam = c.v6 ? 'v6' : 'v4';
  iptLock(c.v6, st.id, st.comment, [c], !ipt[fam], st.netns);
  ipt[fam] = true;
}

/**
 * Lock one connection of the tree (sockets-inet, just before its socket goes
 * into repair mode and its queues are read). Throws (the dump fails, the tree
 * goes on) when no lock can be had: --network-lock skip dumps without one.
 */
export function lockConnection(ctx: DumpCtx, c: Conn): void {
  const st = ctx.state(netlockUnit);
  try {
    if (!st.method) start(ctx, st);
    if (st.method === 'nftables') st.nft!.run(nftAddElements(tableName(st.id, true), [c]).join('; '));
    else if (st.method === 'iptables') lockIpt(st, c);
  } catch (e) {
    if (!(e instanceof StasisError) || e.code !== ErrorCodes.NETWORK_LOCK) throw e;
    throw new StasisError(ErrorCodes.NETWORK_LOCK, `cannot lock the network for TCP connection ${c.local}:${c.lport} ↔ ${c.peer}:${c.pport}: ${e.message}` +
      `${st.nftFailed ? ` (and ${st.nftFailed})` : ''}; --network-lock skip dumps without a lock (the peer may then see a reset)`, { cause: e });
  }
  st.conns.push(c);
  log.debug(`network lock (${st.method}${st.netns ? ', in the tree\'s network namespace' : ''}): ${c.peer}:${c.pport} → ${c.local}:${c.lport}`);
}

/** inventory_entry fields: the method, and the lock's id when a lock waits for the restore. */
export function netlockInventory(ctx: DumpCtx): Partial<Msg<'inventory_entry'>> {
  const st = ctx.state(netlockUnit);
  if (!st.method) return {};
  const kept = st.method !== 'skip' && !ctx.opts.leaveRunning && st.netns === undefined;
  return { network_lock_method: CODE_OF[st.method], ...(kept ? { dump_criu_run_id: st.id } : {}) };
}

/** The dump is complete and the tree is about to die: the lock must outlive us, until the restore. */
function handOver(st: DumpState): void {
  if (st.netns !== undefined) {
    // Its namespace dies with the tree (our nft, holding it meanwhile, ends in afterRelease).
    st.ipt?.watchdog.disarm();
    log.info('network lock: the tree\'s own network namespace goes with it; nothing to keep');
  } else if (st.method === 'nftables') {
    nftApply(nftTable(tableName(st.id), st.comment, st.conns, false));
    log.info(`network lock kept for the restore: nftables table inet ${tableName(st.id)}`);
  } else if (st.method === 'iptables') {
    st.ipt!.watchdog.disarm();
    log.info(`network lock kept for the restore: iptables chains STASIS-${st.id}-IN/OUT`);
  }
}

/** A failed dump or -R: the connections go on here; nothing of the lock stays. */
function unlockDump(st: DumpState): void {
  if (st.method === 'nftables') st.nft!.run(`delete table inet ${tableName(st.id, true)}`);
  else if (st.method === 'iptables') {
    iptUnlock(false, st.id, st.netns);
    iptUnlock(true, st.id, st.netns);
    // Only once they are gone: if removing failed, the watchdog (at our exit) tries again.
    st.ipt!.watchdog.disarm();
  }
}

interface Loaded {
  method?: Method;
  /** The lock waiting for this restore. */
  id?: string;
  /** A run id that is not a lock of ours (criu's own images: its lock is criu's business). */
  foreign?: string;
}

function loadLock(inv: Msg<'inventory_entry'>, file: string): Loaded {
  if (inv.network_lock_method === undefined) return {};
  const method = METHOD_OF[inv.network_lock_method];
  if (!method) throw new StasisError(ErrorCodes.BAD_IMAGE, `${file}: unknown network_lock_method ${inv.network_lock_method}`);
  const id = inv.dump_criu_run_id;
  if (id === undefined || method === 'skip') return { method };
  // It goes into firewall commands: nothing but our own ids.
  return LOCK_ID.test(id) ? { method, id } : { method, foreign: id };
}

export const netlockUnit = defineUnit<DumpState, Loaded>({
  name: 'network lock',
  dumpState: (): DumpState => ({ id: crypto.randomBytes(6).toString('hex'), conns: [], comment: '' }),
  // Before the tree dies or runs (after sockets-inet has put its connections
  // back out of repair mode, for -R: a probe they send meanwhile is dropped and
  // sent again).
  beforeRelease(_ctx, st, how) {
    if (!st.method || st.method === 'skip') return;
    if (how.kill) handOver(st);
    else unlockDump(st);
  },
  // Our nft goes: its owner table with it (what had to stay was handed over).
  afterRelease(_ctx, st) {
    st.nft?.close();
    st.ipt?.watchdog.close();
  },
  load: (ld) => loadLock(ld.inventory, ld.images.path('inventory.img')),
  restorePhases: [{
    // After everything that can still fail before the tasks run (a failed
    // restore leaves the lock for the next attempt; credentials included, so
    // afterAll), before the sockets leave
    // repair mode (sockets-inet's tcp-repair-off) and the tasks are let go.
    name: 'network-unlock', afterAll: true, after: ['creds'],
    once(ctx, l) {
      const asked = ctx.opts.networkLock;
      if (asked && asked !== (l.method ?? 'skip')) {
        ctx.warnings.push(`--network-lock ${asked} is ignored on restore: the dump's lock (${l.method ?? 'none'}) decides`);
      }
      if (l.foreign !== undefined) ctx.warnings.push(`the images name network lock '${l.foreign.replace(/[^\x20-\x7e]/g, '?')}', not one of stasis's: left alone`);
      if (!l.id) return;
      const removed = removeLock(l.id);
      log.info(removed.length ? `network lock removed: ${removed.join('; ')}` : `network lock ${l.id}: not here (already removed, or another host)`);
    },
  }],
});

// ---------------------------------------------------------------- stasis netlock

export type LockState = 'dumping' | 'waiting' | 'stale' | 'unknown';
export interface LockReport extends FoundLock { state: LockState; detail: string }

/** The lock id a checkpoint waits on (undefined: none, or no complete checkpoint there). */
export function checkpointLockId(dir: string): string | undefined {
  try {
    return readImage(dir, 'inventory.img', 'INVENTORY', 'inventory_entry')[0]?.dump_criu_run_id;
  } catch {
    return undefined;
  }
}

function alive(pid: number): boolean {
  try { process.kill(pid, 0); return true; } catch (e) { return (e as NodeJS.ErrnoException).code === 'EPERM'; }
}

function stateOf(l: FoundLock): LockReport {
  const r = (state: LockState, detail: string): LockReport => ({ ...l, state, detail });
  if (l.owned) return r('dumping', `held by a running dump${l.pid ? ` (pid ${l.pid})` : ''}; goes with it`);
  if (l.images && checkpointLockId(l.images) === l.id) return r('waiting', `waits for stasis restore -D ${l.images}`);
  if (l.pid && alive(l.pid)) return r('dumping', `dump pid ${l.pid} still runs`);
  if (!l.images) return r('unknown', 'its images directory is not recorded in full');
  return r('stale', `no checkpoint in ${l.images} waits on it`);
}

/** Every stasis network lock here, with what it waits for. */
export function listNetworkLocks(): LockReport[] {
  return findLocks().map(stateOf);
}

/**
 * Remove locks: `dir` the lock its checkpoint waits on; `id` that lock;
 * `all` every lock not held by a running dump; else the stale ones.
 */
export function clearNetworkLocks(sel: { dir?: string; id?: string; all?: boolean }): string[] {
  if (sel.dir) {
    const id = checkpointLockId(sel.dir);
    if (!id) throw new StasisError(ErrorCodes.USAGE, `no checkpoint in ${sel.dir} waits on a network lock`);
    return removeLock(id);
  }
  if (sel.id) return removeLock(sel.id);
  const chosen = listNetworkLocks().filter((l) => (sel.all ? l.state !== 'dumping' : l.state === 'stale'));
  return [...new Set(chosen.map((l) => l.id))].flatMap(removeLock);
}
