// `stasis migrate` / `stasis migrate-receive`: move a running tree to another
// host over one plain TCP connection. The source makes K pre-dumps while the
// tree runs, then the final dump, each into a local directory; the pages of
// each go over the connection as a page server session (criu's protocol,
// protocol.ts), the other images follow as files; the receiver puts each
// round into DIR/<round> (DIR/1.., DIR/final: the `parent` links, relative,
// hold there as here) and verifies it against its digest. Then it restores
// DIR/final and answers with the restored pid; the source prints the
// downtime: from the freeze of the final dump to the tree running there.
//
// --lazy (post-copy): no pre-dumps; the final dump leaves the private
// anonymous pages out (dump --lazy-pages) and serves them from the frozen
// tree on a port of its own; the other images go over as files (a round 'P':
// no page session), and X names that port. The receiver restores at once,
// the tree runs there and pulls the missing pages on fault and in the
// background (restore --lazy-pages --page-server); its answer K comes then,
// with the restore's own duration (the downtime: freeze to X, plus that).
// The source kills its tree when the receiver has every page; if the
// transfer breaks off before, the copy is killed there and the tree here
// runs on (post-copy's own guarantees: lazy-source.ts, restore/lazy-server.ts).
//
// What loses nothing: the source kills its tree only once the receiver has
// the whole final checkpoint and has verified it (the dump's post-dump point:
// images complete, tree still frozen); until then any failure (connection,
// receiver, digest) lets the tree go on untouched. The restore comes after
// the kill, as criu's migration: a tree holding a listening socket or a
// connection cannot be restored while its original still holds them (on one
// machine, in a shared network namespace). If the restore fails, the
// complete, verified checkpoint is in DIR/final there (and the small images
// in the source's work directory): `stasis restore -D DIR/final` again.
//
// Frames after a round's page session: 1 byte type, u32 length, payload.
//   R name        a round begins (its page session follows)
//   P name        a round without pages: a post-copy final dump (--lazy)
//   F name\0data  a file of the round;  L name\0target  a symbolic link
//   E             round complete: the receiver moves it into place, verifies, answers
//   X [json]      restore DIR/final; answered with the restored pid ({"lazyPort": N}: post-copy
//                 from the source's address on port N)
//   K text / N text   the receiver's answer: done / refused (the reason)
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { StasisError, ErrorCodes } from '../errors';
import { tcpConnect, tcpListen, tcpAccept, peerName, readFull, writeFull, setRecvTimeout, type TcpEndpoint } from '../sys/tcp';
import { openNew, writeAll } from '../images/image';
import { servePages, stagingIn } from './server';
import { TRANSFER_TIMEOUT_MS } from './client';

const FINAL = 'final';
/** How long the source waits for the receiver's restore. */
const RESTORE_TIMEOUT_MS = 600_000;

type FrameType = 'R' | 'P' | 'F' | 'L' | 'E' | 'X' | 'K' | 'N';

function frame(type: FrameType, payload: Buffer = Buffer.alloc(0)): Buffer[] {
  const h = Buffer.alloc(5);
  h.write(type, 0, 'latin1');
  h.writeUInt32LE(payload.length, 1);
  return [h, payload];
}

function readFrame(fd: number, where: string): { type: FrameType; payload: Buffer } {
  const h = Buffer.alloc(5);
  const fail = (why: string) => new StasisError(ErrorCodes.IO_ERROR, `migration ${where}: ${why}`);
  let n: number;
  try { n = readFull(fd, h, 0, 5); } catch (e) { throw fail(`connection lost (${(e as NodeJS.ErrnoException).code ?? e})`); }
  if (n !== 5) throw fail('the other side closed the connection');
  const len = h.readUInt32LE(1);
  const payload = Buffer.allocUnsafe(len);
  try { n = readFull(fd, payload, 0, len); } catch (e) { throw fail(`connection lost (${(e as NodeJS.ErrnoException).code ?? e})`); }
  if (n !== len) throw fail('the other side closed the connection in the middle of a frame');
  return { type: h.toString('latin1', 0, 1) as FrameType, payload };
}

function send(fd: number, where: string, bufs: Buffer[]): void {
  try { writeFull(fd, bufs); } catch (e) {
    throw new StasisError(ErrorCodes.IO_ERROR, `migration ${where}: connection lost (${(e as NodeJS.ErrnoException).code ?? e})`);
  }
}

// ---------------------------------------------------------------- source

export interface MigrateOptions {
  to: TcpEndpoint;
  /** Pre-dumps before the final dump. */
  rounds: number;
  tcpEstablished?: boolean;
  /** As dump's (skip: no lock; needed when the tree's network namespace is external). */
  networkLock?: 'nftables' | 'iptables' | 'skip';
  /** criu --external (e.g. the tree's network namespace: net[INODE]:KEY). */
  external?: string[];
  /** Where the local images go (default: a new directory under the system's temporary one, removed after a success). */
  workDir?: string;
  /** Post-copy: the tree runs there before its private memory is there (no pre-dumps then). */
  lazy?: boolean;
  /** Progress lines. */
  say?: (line: string) => void;
}

export interface MigrateResult {
  pid: number;
  /** The restored root's pid there. */
  restoredPid: number;
  rounds: { name: string; pages: number; ms: number; frozenMs: number }[];
  /** From the freeze of the final dump to the tree running there (our clock: the answer's arrival; --lazy: see the top). */
  downtimeMs: number;
  /** --lazy: the pages the tree there pulled after it started. */
  lazy?: { pages: number; requests: number };
}

function sendDir(fd: number, where: string, dir: string): void {
  for (const name of fs.readdirSync(dir).sort()) {
    const p = path.join(dir, name);
    const st = fs.lstatSync(p);
    if (st.isSymbolicLink()) send(fd, where, frame('L', Buffer.from(`${name}\0${fs.readlinkSync(p)}`)));
    else if (st.isFile()) send(fd, where, frame('F', Buffer.concat([Buffer.from(`${name}\0`), fs.readFileSync(p)])));
  }
  send(fd, where, frame('E'));
}

/** The receiver's answer: K's text, or a StasisError with its reason. */
function answer(fd: number, where: string, what: string): string {
  const f = readFrame(fd, where);
  if (f.type === 'K') return f.payload.toString();
  if (f.type === 'N') throw new StasisError(ErrorCodes.IO_ERROR, `migration ${where}: the receiver refused ${what}: ${f.payload.toString()}`);
  throw new StasisError(ErrorCodes.IO_ERROR, `migration ${where}: unexpected frame '${f.type}'`);
}

export function migrate(pid: number, o: MigrateOptions): MigrateResult {
  // Loaded here: the receiver needs neither.
  const { preDump } = require('../dump/predump') as typeof import('../dump/predump');
  const { dump } = require('../dump/dump') as typeof import('../dump/dump');
  const where = `to ${o.to.address}:${o.to.port}`;
  const work = o.workDir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'stasis-migrate-'));
  let fd: number;
  try { fd = tcpConnect(o.to, TRANSFER_TIMEOUT_MS); } catch (e) {
    throw new StasisError(ErrorCodes.IO_ERROR, `cannot connect ${where}: ${(e as Error).message}`);
  }
  const ps = { fd, where };
  const rounds: MigrateResult['rounds'] = [];
  if (o.lazy) {
    try { return migrateLazy(pid, o, fd, where, work); } finally { fs.closeSync(fd); }
  }
  try {
    for (let i = 1; i <= o.rounds; i++) {
      send(fd, where, frame('R', Buffer.from(String(i))));
      const r = preDump(pid, { dir: path.join(work, String(i)), prevImagesDir: i > 1 ? `../${i - 1}` : undefined, pageServer: ps });
      sendDir(fd, where, path.join(work, String(i)));
      answer(fd, where, `pre-dump ${i}`);
      rounds.push({ name: String(i), pages: r.pages, ms: r.ms, frozenMs: r.frozenMs });
      o.say?.(`migrate: pre-dump ${i}: ${r.pages} pages sent, frozen ${r.frozenMs.toFixed(1)} ms`);
    }
    send(fd, where, frame('R', Buffer.from(FINAL)));
    let tFreeze = 0n;
    const r = dump(pid, {
      dir: path.join(work, FINAL), leaveRunning: false, tcpEstablished: o.tcpEstablished, external: o.external, networkLock: o.networkLock,
      prevImagesDir: o.rounds ? `../${o.rounds}` : undefined, pageServer: ps,
      notify(point) {
        if (point === 'pre-dump') tFreeze = process.hrtime.bigint();
        // Images complete, tree frozen: they go over and are verified there before the kill.
        if (point === 'post-dump') {
          sendDir(fd, where, path.join(work, FINAL));
          answer(fd, where, 'the final checkpoint');
        }
      },
    });
    rounds.push({ name: FINAL, pages: r.pages, ms: r.ms, frozenMs: r.frozenMs });
    waitGone(pid, o.say);
    send(fd, where, frame('X'));
    setRecvTimeout(fd, RESTORE_TIMEOUT_MS);
    const restored = JSON.parse(answer(fd, where, 'the restore')) as { pid: number };
    const downtimeMs = Number(process.hrtime.bigint() - tFreeze) / 1e6;
    if (!o.workDir) fs.rmSync(work, { recursive: true, force: true });
    return { pid, restoredPid: restored.pid, rounds, downtimeMs };
  } finally {
    fs.closeSync(fd);
  }
}

/** --lazy: the final dump serves its lazy pages to the restore there, which runs the tree at once (see the top). */
function migrateLazy(pid: number, o: MigrateOptions, fd: number, where: string, work: string): MigrateResult {
  const { dump } = require('../dump/dump') as typeof import('../dump/dump');
  if (o.rounds) throw new StasisError(ErrorCodes.USAGE, 'migrate --lazy makes no pre-dumps (--rounds 0): the pages follow the restore');
  const dir = path.join(work, FINAL);
  send(fd, where, frame('P', Buffer.from(FINAL)));
  let tFreeze = 0n, tAsked = 0n;
  let askFailed: unknown;
  const r = dump(pid, {
    dir, leaveRunning: false, tcpEstablished: o.tcpEstablished, external: o.external, networkLock: o.networkLock,
    lazyPages: {
      address: o.to.address.includes(':') ? '::' : '0.0.0.0', port: 0,
      // The images are complete and verified there: the restore may start (its first request comes on our port).
      onListening: (port) => {
        try { send(fd, where, frame('X', Buffer.from(JSON.stringify({ lazyPort: port })))); tAsked = process.hrtime.bigint(); } catch (e) { askFailed = e; }
      },
    },
    notify(point) {
      if (point === 'pre-dump') tFreeze = process.hrtime.bigint();
      // Images complete, tree frozen: they go over and are verified there; a refusal lets the tree go on.
      if (point === 'post-dump') {
        sendDir(fd, where, dir);
        answer(fd, where, 'the final checkpoint');
      }
    },
  });
  if (askFailed) throw askFailed;
  // Every page is there (the dump killed the tree on the receiver's CLOSE); its answer came long before.
  const restored = JSON.parse(answer(fd, where, 'the restore')) as { pid: number; ms: number };
  const downtimeMs = Number(tAsked - tFreeze) / 1e6 + restored.ms;
  if (!o.workDir) fs.rmSync(work, { recursive: true, force: true });
  return {
    pid, restoredPid: restored.pid, rounds: [{ name: FINAL, pages: r.pages, ms: r.ms, frozenMs: r.frozenMs }], downtimeMs,
    lazy: { pages: r.lazy?.pages ?? 0, requests: r.lazy?.requests ?? 0 },
  };
}

/**
 * On one machine the killed root may linger as a zombie until its parent
 * reaps it, holding the pid the restore there needs: wait for that a while
 * (between two hosts it is gone at once).
 */
function waitGone(pid: number, say?: (l: string) => void): void {
  const nap = new Int32Array(new SharedArrayBuffer(4));
  for (let i = 0; i < 1000 && fs.existsSync(`/proc/${pid}`); i++) Atomics.wait(nap, 0, 0, 10);
  if (fs.existsSync(`/proc/${pid}`)) say?.(`migrate: pid ${pid} is still not reaped by its parent here; the restore there may find it in use`);
}

// ---------------------------------------------------------------- receiver

export interface ReceiveOptions {
  dir: string;
  address: string;
  port: number;
  /** criu --join-ns for the restore (the tree's network namespace here). */
  joinNs?: string[];
  onListening?: (port: number) => void;
  say?: (line: string) => void;
}

export interface ReceiveResult { peer: string; rounds: string[]; restoredPid?: number; restoreMs?: number; lazyPages?: number }

/** X's payload: post-copy from the source's address (the migration's peer) on the port it names, or none. */
function lazySourceOf(payload: Buffer, peer: string, where: string): import('./lazy-client').LazyRemote | undefined {
  if (!payload.length) return undefined;
  let port: unknown;
  try { port = (JSON.parse(payload.toString()) as { lazyPort?: unknown }).lazyPort; } catch { port = undefined; }
  if (!Number.isInteger(port) || (port as number) <= 0 || (port as number) > 65535) throw new StasisError(ErrorCodes.BAD_IMAGE, `migration ${where}: bad restore request`);
  const address = peer.replace(/:\d+$/, '').replace(/^\[(.*)\]$/, '$1');
  const { LazyRemote } = require('./lazy-client') as typeof import('./lazy-client');
  return LazyRemote.connect({ address, port: port as number });
}

/** Serve one migration: rounds into DIR/<round>, then the restore of DIR/final. */
export function migrateReceive(o: ReceiveOptions): ReceiveResult {
  if (!fs.existsSync(o.dir)) fs.mkdirSync(o.dir, { recursive: true, mode: 0o700 });
  const l = tcpListen({ address: o.address, port: o.port });
  let fd: number;
  try {
    o.onListening?.(l.port);
    fd = tcpAccept(l.fd, TRANSFER_TIMEOUT_MS);
  } finally { fs.closeSync(l.fd); }
  const peer = peerName(fd);
  const where = `from ${peer}`;
  const res: ReceiveResult = { peer, rounds: [] };
  const refuse = (e: unknown) => { try { send(fd, where, frame('N', Buffer.from((e as Error).message))); } catch { /* gone */ } };
  try {
    for (;;) {
      let f: { type: FrameType; payload: Buffer };
      try { f = readFrame(fd, where); } catch (e) {
        if (res.restoredPid !== undefined) return res; // the source ended the session
        throw e;
      }
      if (f.type === 'R' || f.type === 'P') {
        const name = f.payload.toString();
        if (!/^(\d+|final)$/.test(name) || res.rounds.includes(name) || (f.type === 'P' && name !== FINAL)) throw new StasisError(ErrorCodes.BAD_IMAGE, `migration ${where}: bad round '${name}'`);
        receiveRound(fd, where, o, name, res.rounds.at(-1), f.type === 'P');
        res.rounds.push(name);
        o.say?.(`migrate-receive: ${name === 'final' ? 'final dump' : `pre-dump ${name}`} received and verified`);
      } else if (f.type === 'X') {
        if (!res.rounds.includes('final')) throw new StasisError(ErrorCodes.BAD_IMAGE, `migration ${where}: restore asked before the final dump`);
        const { restore } = require('../restore/restore') as typeof import('../restore/restore');
        const t0 = process.hrtime.bigint();
        const lazyRemote = lazySourceOf(f.payload, peer, where);
        try {
          const r = restore({ dir: path.join(o.dir, 'final'), detach: true, joinNs: o.joinNs, verify: true, lazyPages: lazyRemote !== undefined, lazyRemote });
          res.restoredPid = r.pid;
          res.restoreMs = r.ms;
          send(fd, where, frame('K', Buffer.from(JSON.stringify({ pid: r.pid, ms: Number(process.hrtime.bigint() - t0) / 1e6 }))));
          if (r.lazy) {
            o.say?.(`migrate-receive: restored pid ${r.pid}; pulling ${(r.lazy.toJSON().bytes / 1048576).toFixed(1)} MiB of lazy pages from ${where.slice(5)}`);
            const st = r.lazy.serve(process.env.STASIS_LAZY_HOLD) as { faultPages: number; streamedPages: number };
            res.lazyPages = st.faultPages + st.streamedPages;
            return res;
          }
        } catch (e) {
          lazyRemote?.drop();
          res.restoredPid = -1; // refused below, once
          refuse(e);
          throw e;
        }
      } else throw new StasisError(ErrorCodes.BAD_IMAGE, `migration ${where}: unexpected frame '${f.type}'`);
    }
  } catch (e) {
    // Told to the source too, if it still listens.
    if (res.restoredPid === undefined) refuse(e);
    throw e;
  } finally {
    fs.closeSync(fd);
  }
}

/** One round: its page session, its files, then moved into DIR/<name> and verified (answered K or N). */
function receiveRound(fd: number, where: string, o: ReceiveOptions, name: string, prev: string | undefined, noPages = false): void {
  const { verifyImages } = require('../images/digest') as typeof import('../images/digest');
  const staging = stagingIn(o.dir, '.stasis-migrate-');
  const target = path.join(o.dir, name);
  try {
    const pages = noPages ? { files: [] as string[] } : servePages(fd, staging, where, prev === undefined ? undefined : path.join(o.dir, prev));
    const names = [...pages.files];
    for (;;) {
      const f = readFrame(fd, where);
      if (f.type === 'E') break;
      const z = f.payload.indexOf(0);
      const file = z > 0 ? f.payload.toString('utf8', 0, z) : '';
      if (!/^[A-Za-z0-9_][A-Za-z0-9._-]*$/.test(file)) throw new StasisError(ErrorCodes.BAD_IMAGE, `migration ${where}: bad file name '${file}'`);
      if (f.type === 'F' && pages.files.includes(file) && file.startsWith('pagemap-')) {
        // The sender's own copy of a pagemap the page session wrote: the same bytes, or the two sides disagree.
        if (!fs.readFileSync(path.join(staging, file)).equals(f.payload.subarray(z + 1))) throw new StasisError(ErrorCodes.CORRUPT, `migration ${where}: ${file} differs from the pages received`);
        continue;
      }
      if (names.includes(file)) throw new StasisError(ErrorCodes.BAD_IMAGE, `migration ${where}: ${file} sent twice`);
      if (f.type === 'F') {
        const out = openNew(path.join(staging, file));
        try { writeAll(out, f.payload.subarray(z + 1), file); } finally { fs.closeSync(out); }
      } else if (f.type === 'L') fs.symlinkSync(f.payload.toString('utf8', z + 1), path.join(staging, file));
      else throw new StasisError(ErrorCodes.BAD_IMAGE, `migration ${where}: unexpected frame '${f.type}'`);
      names.push(file);
    }
    if (fs.existsSync(target)) throw new StasisError(ErrorCodes.IO_ERROR, `${target} exists already (migrate into a fresh directory)`);
    fs.renameSync(staging, target);
    fs.chmodSync(target, 0o700);
    verifyImages(target);
    send(fd, where, frame('K', Buffer.from('ok')));
  } finally {
    fs.rmSync(staging, { recursive: true, force: true });
  }
}
