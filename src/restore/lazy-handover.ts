// restore -d --lazy-pages: the command must return while pages are still
// being served, so another process — the heir — serves them after it. The
// restore itself runs here, in the command, from its first instruction: the
// heir (a second start of stasis, ~its whole start-up time) is spawned at
// the command's start and loads its modules while the restore goes on; the
// tree runs as soon as it is restored, served by us meanwhile. Once the heir
// says it is ready, the service passes to it and the command returns.
//
// The handover over a SEQPACKET socketpair (the heir's fd 3):
//   heir → us  R               ready (modules loaded)
//   us → heir  S n + fds        the server's state (handoverState) in n packets after
//                              this one; the fds: userfaultfds, pages files, the
//                              source's connection (post-copy), the log
//   heir → us  G               got them: the heir serves from now on
//   us → heir  D pids          the leaders we traced, let go (PTRACE_DETACH)
//   heir → us  K               seized (PTRACE_O_EXITKILL): we exit
// Never a moment without a guard: until D we trace the leaders (our death kills
// them); from G the heir holds the userfaultfds too (and serves the faults that
// our detaching may wait on); if the heir dies before K, the tree is killed here.
// If the heir dies before G, nothing passed: we serve on ourselves.
import * as fs from 'node:fs';
import * as os from 'node:os';
import { abi, socketpair, sendPacket, recvPacket, pidfdOpen, pollOne, tryKill } from '../sys';
import { StasisError, ErrorCodes } from '../errors';
import { log, logFd, logLevel, adoptLog } from '../log';
import { LazyServer, type HandoverState, type LazyStats } from './lazy-server';
import { pageReader } from './page-source';
import { nodeChildEnv } from '../node-lazy';
import { ImageReader } from '../images/image';
import { DeferredChunks, prewarmReadAhead, type DigestEntry } from '../images/digest';
import { LazyRemote } from '../pageserver/lazy-client';
import { killAndReap } from '../compel/clone';

const { SOCK, POLL, SIG } = abi;
/** JSON per packet (well under a socket's default send buffer). */
const PART = 32 << 10;

export interface Heir { pid: number; sock: number; pidfd: number }

/** A pages file as handed over: its fd (an index into the fds), where it is, its digest progress. */
interface HandedFile { fd: number; dir: string; name: string; check?: { entry: DigestEntry; done: number[]; where: string } }
interface Handed { server: HandoverState; files: HandedFile[]; remote?: { fd: number; where: string }; log?: { fd: number; level: number }; nice: number }

/**
 * How much nicer the heir starts than we are: on a busy machine its start-up
 * would otherwise take CPU from the restore and from the tree's first steps,
 * which are what the time to answer is made of (on idle cores it changes
 * nothing). It takes our priority back when it takes over.
 */
const HEIR_NICER = 10;

/** Start the heir: this command again (same arguments), detached, with the socket as fd 3 (named by `env`). */
export function spawnHeir(env: string): Heir {
  const { spawn } = require('node:child_process') as typeof import('node:child_process');
  const [ours, theirs] = socketpair(SOCK.SEQPACKET);
  try {
    const child = spawn(process.execPath, [...process.execArgv, process.argv[1], ...process.argv.slice(2)], {
      detached: true, stdio: ['ignore', 'ignore', 'ignore', theirs], env: nodeChildEnv({ [env]: '3' }),
    });
    child.unref();
    if (!child.pid) throw new StasisError(ErrorCodes.RESTORE_FAILED, 'cannot start the lazy-pages server');
    try { os.setPriority(child.pid, Math.min(19, os.getPriority() + HEIR_NICER)); } catch { /* only slower */ }
    // Our child: not reaped before our event loop runs again, so its pid is its own until then.
    return { pid: child.pid, sock: ours, pidfd: pidfdOpen(child.pid) };
  } catch (e) {
    fs.closeSync(ours);
    throw e;
  } finally {
    fs.closeSync(theirs);
  }
}

/** The restore failed (or needs no heir): the heir is gone before we say so. */
export function dismissHeir(h: Heir): void {
  tryKill(h.pid, SIG.SIGKILL);
  try { pollOne(h.pidfd, POLL.IN, 10000); } finally { fs.closeSync(h.pidfd); fs.closeSync(h.sock); }
}

function send(sock: number, tag: string, json?: unknown, fds: number[] = []): boolean {
  return sendPacket(sock, Buffer.from(json === undefined ? tag : tag + JSON.stringify(json)), fds) >= 0;
}

/** The next packet (blocking): its tag and JSON, the fds with it; undefined when the other side is gone. */
function receive(sock: number): { tag: string; body: string; fds: number[] } | undefined {
  const p = recvPacket(sock, PART + 64);
  if (typeof p === 'number' || p.length === 0) return undefined;
  const s = p.data.toString();
  return { tag: s[0], body: s.slice(1), fds: p.fds };
}

/**
 * Serve the restored tree until the heir is ready, then hand the service
 * over (see the top of the file). Returns 'handover' once the heir serves,
 * or the stats if every page was in first (or the heir died before taking
 * anything: we served to the end).
 */
export function serveUntilHeir(server: LazyServer, h: Heir, hold?: string): LazyStats | 'handover' {
  try {
    let heirReady = false;
    const side = { fd: h.sock, faultsOnly: true, ready: () => {
      const m = receive(h.sock);
      if (m?.tag === 'R') return (heirReady = true);
      log.warn('lazy pages: the heir exited before it was ready; served by the restore command to the end');
      side.fd = -1;
      return false;
    } };
    const r = server.serve(hold, side);
    if (r !== 'handover' || !heirReady) return r;
    if (!handOver(server, h)) return server.serve(hold);
    return 'handover';
  } finally {
    fs.closeSync(h.sock);
    fs.closeSync(h.pidfd);
  }
}

/** False if the heir died before it had anything (we go on serving); throws if it died with the tree let go. */
function handOver(server: LazyServer, h: Heir): boolean {
  const { state, fds } = server.handoverState();
  const { pagesFiles, remote } = server.sources;
  const files: HandedFile[] = pagesFiles.map(({ fd, images, name }) => ({ fd: fds.indexOf(fd), dir: images.dir, name, check: images.deferred?.progress(name) }));
  const handed: Handed = { server: state, files, nice: os.getPriority() };
  if (remote && remote.socket >= 0) handed.remote = { fd: fds.push(remote.socket) - 1, where: remote.where };
  const lf = logFd();
  if (lf !== undefined) handed.log = { fd: fds.push(lf) - 1, level: logLevel() };
  const text = JSON.stringify(handed);
  const parts: string[] = [];
  for (let i = 0; i < text.length; i += PART) parts.push(text.slice(i, i + PART));
  if (fds.length > 250) { log.warn(`lazy pages: ${fds.length} fds are too many to hand over; served by the restore command to the end`); return false; }
  let ok = send(h.sock, 'S', parts.length, fds);
  for (const p of parts) ok &&= sendPacket(h.sock, Buffer.from(p), []) >= 0;
  if (!ok || receive(h.sock)?.tag !== 'G') {
    log.warn('lazy pages: the heir exited during the handover; served by the restore command to the end');
    return false;
  }
  // The heir serves from now on (the faults our detaching may wait for, too).
  const pids = server.letGo();
  if (!send(h.sock, 'D', pids) || receive(h.sock)?.tag !== 'K') {
    // Killed before our copies of the userfaultfds go: no thread runs on with a zero page.
    for (const pid of state.pids) tryKill(pid, SIG.SIGKILL);
    server.abandon();
    // The root is our child: reaped, so that its pid is free when we say it failed.
    for (const pid of state.pids) killAndReap(pid);
    throw new StasisError(ErrorCodes.RESTORE_FAILED, 'lazy pages: the server exited while taking over; the restored tree was killed');
  }
  server.abandon();
  log.info(`lazy pages: handed over to pid ${h.pid}`);
  return true;
}

/** The heir's side: ready, take the service over, serve until every page is in. Returns the exit code. */
export function runHeir(sock: number, hold: string | undefined, anyOwner: boolean, verify = true): number {
  // Its hashing threads start now, while it waits (niced), not when its
  // streaming first needs them (~20 ms of its thread as the first faults came);
  // none without a digest to check.
  if (verify) prewarmReadAhead();
  if (!send(sock, 'R')) return 0;
  const head = receive(sock);
  if (head?.tag !== 'S') return 0; // the restore failed, or every page was in before we were ready
  let text = '';
  for (let n = Number(head.body); n > 0; n--) {
    const p = recvPacket(sock, PART);
    if (typeof p === 'number' || p.length === 0) return 1;
    text += p.data.toString();
  }
  const h = JSON.parse(text) as Handed;
  const fds = head.fds;
  if (h.log) adoptLog(fds[h.log.fd], h.log.level);
  // The server of a running tree: back to the restore command's priority.
  try { os.setPriority(h.nice); } catch (e) { log.warn(`lazy pages: cannot take the priority ${h.nice} back: ${(e as Error).message}`); }
  const checks = new Map<number, { d: DeferredChunks; name: string }>();
  for (const f of h.files) {
    if (!f.check) continue;
    const d = new DeferredChunks(new ImageReader(f.dir, anyOwner ? null : undefined), f.check.where, [f.check.entry], new Map([[f.name, f.check.done]]));
    checks.set(fds[f.fd], { d, name: f.name });
  }
  const remote = h.remote && LazyRemote.adopt(fds[h.remote.fd], h.remote.where);
  const reader = pageReader(remote, (fd, off, len, streaming) => { const c = checks.get(fd); c?.d.range(c.name, fd, off, len, streaming); });
  const server = LazyServer.adopt(h.server, fds, reader);
  if (!send(sock, 'G')) {
    // Nothing let go yet: the restore command still traces the tree and serves it.
    server.abandon();
    return 0;
  }
  const side = { fd: sock, ready: () => {
    const m = receive(sock);
    side.fd = -1;
    if (m?.tag !== 'D') throw new StasisError(ErrorCodes.RESTORE_FAILED, 'lazy pages: the restore command exited during the handover');
    server.seize(JSON.parse(m.body) as number[]);
    send(sock, 'K');
    return false;
  } };
  server.serve(hold, side);
  // Every page was in before the command let the tree go (a few pages stream
  // at once): it still waits for our answer to its 'D' — without it, it would
  // take us for dead and kill the tree. Nothing to seize: nothing can fault.
  if (side.fd >= 0 && receive(sock)?.tag === 'D') send(sock, 'K');
  fs.closeSync(sock);
  return 0;
}
