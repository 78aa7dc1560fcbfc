// `stasis page-server`: receive the pages of one dump (or pre-dump) over TCP,
// as criu's page server does (protocol.ts), and write pagemap-PID.img and
// pages-N.img into DIR; the sender writes the other images where it runs.
// One session: it ends when the sender closes it, as criu's.
//
// Nothing half-received ever lands in DIR: the files are written into a
// private staging directory inside it and moved into place only when the
// sender says everything was sent (CLOSE); then the sender is told (status
// 0), and only then does it commit its own images and kill its tree. A
// session that breaks off (sender gone, reset, bad command) leaves DIR as it
// was. The receiver writes no digest: the sender's lists these files (see
// client.ts), so the two sets put together verify as one checkpoint.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { StasisError, ErrorCodes } from '../errors';
import { abi } from '../sys';
import { readFull, writeFull, tcpListen, tcpAccept, peerName } from '../sys/tcp';
import { TRANSFER_TIMEOUT_MS } from './client';
import { PE } from '../images/criu';
import { encodePagemap } from '../images/pagemap';
import { openNew, writeAll, ioError } from '../images/image';
import { checkDirTrust } from '../images/dir';
import type { Msg } from '../images/schema';
import { PS, PS_IOV, PS_IOV_SIZE, PS_TYPE, PS_TYPE_BITS, PS_TYPE_MASK, PS_FIRST_PAGES_ID, decodeCmd } from './protocol';

const { PAGE_SIZE } = abi;
const PAGE = BigInt(PAGE_SIZE);
/** Most pages one command may carry (criu sends at most a pipe's worth; this bounds a damaged count). */
const MAX_RUN_PAGES = 1 << 24;
const COPY_BUF = 4 << 20;

export interface SessionResult {
  /** Files written (in the staging directory), in the order opened. */
  files: string[];
  processes: number;
  pages: number;
  bytes: number;
}

function bad(peer: string, msg: string): StasisError {
  return new StasisError(ErrorCodes.BAD_IMAGE, `page server: ${peer}: ${msg}; nothing kept`);
}

/** The pagemap being received: entries as they come, pages appended to their file. */
interface OpenMap { dstId: bigint; vpid: number; pagesId: number; fd: number; hasParent: boolean; entries: Msg<'pagemap_entry'>[]; end: bigint }

/**
 * Serve one page server session on connected socket `fd`, writing into
 * directory fd path `into` (a staging directory); `parentDir` is where
 * has_parent is looked up. Returns at CLOSE (answered once every file is
 * written and `beforeAck` ran); throws if the session breaks off.
 */
export function servePages(fd: number, into: string, peer: string, parentDir: string | undefined, beforeAck?: (r: SessionResult) => void): SessionResult {
  const res: SessionResult = { files: [], processes: 0, pages: 0, bytes: 0 };
  const hdr = Buffer.alloc(PS_IOV_SIZE);
  const buf = Buffer.allocUnsafe(COPY_BUF);
  let cur: OpenMap | undefined;
  let opened = 0;
  const recv = (b: Buffer, off: number, len: number, what: string): void => {
    let n: number;
    try { n = readFull(fd, b, off, len); } catch (e) { throw bad(peer, `connection lost while receiving ${what} (${(e as NodeJS.ErrnoException).code ?? e})`); }
    if (n !== len) throw bad(peer, `the sender closed the connection in the middle of ${what}`);
  };
  const send = (b: Buffer, what: string) => {
    try { writeFull(fd, [b]); } catch (e) { throw bad(peer, `cannot answer ${what} (${(e as NodeJS.ErrnoException).code ?? e})`); }
  };
  const hasParent = (vpid: number) => parentDir !== undefined && fs.existsSync(path.join(parentDir, `pagemap-${vpid}.img`));
  const closeMap = () => {
    if (!cur) return;
    const m = cur;
    cur = undefined;
    fs.closeSync(m.fd);
    const name = `pagemap-${m.vpid}.img`;
    const pfd = openNew(path.join(into, name));
    try { writeAll(pfd, encodePagemap(m.pagesId, m.entries), name); } finally { fs.closeSync(pfd); }
    res.files.push(name);
  };
  try {
    for (;;) {
      let n: number;
      try { n = readFull(fd, hdr, 0, PS_IOV_SIZE); } catch (e) { throw bad(peer, `connection lost (${(e as NodeJS.ErrnoException).code ?? e})`); }
      if (n === 0) throw bad(peer, 'the sender closed the connection before it finished (no CLOSE)');
      if (n !== PS_IOV_SIZE) throw bad(peer, 'the sender closed the connection in the middle of a command');
      const pi = PS_IOV.decode(hdr);
      const { cmd, flags } = decodeCmd(pi.cmd);
      switch (cmd) {
        case PS.IOV_OPEN2:
        case PS.IOV_OPEN: {
          closeMap();
          if ((pi.dst_id & PS_TYPE_MASK) !== PS_TYPE.PID) throw bad(peer, `pagemap type ${pi.dst_id & PS_TYPE_MASK} not supported (process pagemaps only)`);
          const vpid = Number(pi.dst_id >> PS_TYPE_BITS);
          if (!Number.isSafeInteger(vpid) || vpid <= 0 || vpid > 0x7fffffff) throw bad(peer, `bad process id ${vpid}`);
          if (res.files.includes(`pagemap-${vpid}.img`)) throw bad(peer, `process ${vpid} sent twice`);
          const pagesId = PS_FIRST_PAGES_ID + opened++;
          const pagesName = `pages-${pagesId}.img`;
          cur = { dstId: pi.dst_id, vpid, pagesId, fd: openNew(path.join(into, pagesName)), hasParent: hasParent(vpid), entries: [], end: 0n };
          res.files.push(pagesName);
          res.processes++;
          if (cmd === PS.IOV_OPEN2) send(Buffer.from([cur.hasParent ? 1 : 0]), 'OPEN2');
          break;
        }
        case PS.IOV_PARENT: {
          const b = Buffer.alloc(4);
          b.writeInt32LE(hasParent(Number(pi.dst_id >> PS_TYPE_BITS)) ? 1 : 0);
          send(b, 'PARENT');
          break;
        }
        case PS.IOV_ADD_F:
        case PS.IOV_ADD:
        case PS.IOV_HOLE: {
          const f = cmd === PS.IOV_ADD_F ? flags : cmd === PS.IOV_ADD ? PE.PRESENT : PE.PARENT;
          addRun(cur, pi, f, peer, res, (len) => {
            for (let done = 0; done < len;) {
              const k = Math.min(COPY_BUF, len - done);
              recv(buf, 0, k, 'page data');
              try { writeAll(cur!.fd, buf.subarray(0, k), path.join(into, `pages-${cur!.pagesId}.img`)); } catch (e) { throw e instanceof StasisError ? e : ioError(into, 'write pages into', e); }
              done += k;
            }
          });
          break;
        }
        case PS.IOV_CLOSE:
        case PS.IOV_FORCE_CLOSE: {
          closeMap();
          beforeAck?.(res);
          send(Buffer.alloc(4), 'CLOSE');
          return res;
        }
        default:
          throw bad(peer, `unknown or unsupported command ${cmd}${cmd === PS.IOV_GET ? ' (lazy pages)' : ''}`);
      }
    }
  } finally {
    if (cur) fs.closeSync(cur.fd);
  }
}

/** One ADD_F: checked (open pagemap, flags, alignment, address order), recorded, its data received. */
function addRun(cur: OpenMap | undefined, pi: { nr_pages: bigint; vaddr: bigint; dst_id: bigint }, flags: number, peer: string, res: SessionResult, data: (len: number) => void): void {
  if (!cur || cur.dstId !== pi.dst_id) throw bad(peer, 'pages for a pagemap that is not open');
  // criu marks the pages a lazy restore could take as PE_LAZY, with PE_PRESENT when their data is sent (always, without --lazy-pages).
  if (flags !== PE.PRESENT && flags !== PE.PARENT && flags !== (PE.PRESENT | PE.LAZY)) throw bad(peer, `pagemap entry flags ${flags} not supported`);
  if (pi.nr_pages === 0n || pi.nr_pages > BigInt(MAX_RUN_PAGES)) throw bad(peer, `bad page count ${pi.nr_pages}`);
  if (pi.vaddr % PAGE !== 0n || pi.vaddr < cur.end) throw bad(peer, `pages at ${pi.vaddr.toString(16)} out of order or not page-aligned`);
  if (flags === PE.PARENT && !cur.hasParent) throw bad(peer, `process ${cur.vpid}: pages in the parent, but there are no parent images here (--prev-images-dir)`);
  const nr = Number(pi.nr_pages);
  cur.entries.push({ vaddr: pi.vaddr, nr_pages: nr, flags });
  cur.end = pi.vaddr + pi.nr_pages * PAGE;
  if (flags & PE.PRESENT) {
    data(nr * PAGE_SIZE);
    res.pages += nr;
    res.bytes += nr * PAGE_SIZE;
  }
}

/** A private staging directory in `dir` (created 0700 if missing, trusted as an images directory). */
export function stagingIn(dir: string, prefix: string): string {
  if (!fs.existsSync(dir)) {
    try { fs.mkdirSync(dir, { mode: 0o700, recursive: true }); } catch (e) { throw ioError(dir, 'create images directory', e); }
  }
  checkDirTrust(dir, fs.statSync(dir));
  try { return fs.mkdtempSync(path.join(dir, prefix)); } catch (e) { throw ioError(dir, 'write into images directory', e); }
}

/** Move every file of `staging` into `dir` (replacing same-named ones), then remove it. */
export function moveInto(staging: string, dir: string, files: string[]): void {
  try {
    for (const f of files) fs.renameSync(path.join(staging, f), path.join(dir, f));
  } catch (e) {
    throw ioError(dir, 'move received images into', e);
  }
}

export interface PageServerOptions {
  dir: string;
  address: string;
  port: number;
  /** criu --prev-images-dir (relative to dir): where the parent pagemaps are, for has_parent. */
  prevImagesDir?: string;
  /** Called once listening, with the port (the kernel's pick for port 0). */
  onListening?: (port: number) => void;
}

export interface PageServerResult extends SessionResult { dir: string; peer: string }

/** Listen, serve one session into `dir`, and return when the sender has ended it. */
export function runPageServer(o: PageServerOptions): PageServerResult {
  const parentDir = o.prevImagesDir === undefined ? undefined : path.resolve(o.dir, o.prevImagesDir);
  if (parentDir !== undefined && !fs.existsSync(parentDir)) throw new StasisError(ErrorCodes.USAGE, `--prev-images-dir ${o.prevImagesDir}: ${parentDir} does not exist`);
  // The directory is checked (and made) before listening; the staging directory only once a sender is here
  // (a page server killed while it waits leaves nothing behind).
  fs.rmdirSync(stagingIn(o.dir, '.stasis-page-server-'));
  let staging = '';
  let sk = -1;
  try {
    const l = tcpListen({ address: o.address, port: o.port });
    try {
      o.onListening?.(l.port);
      sk = tcpAccept(l.fd, TRANSFER_TIMEOUT_MS);
    } finally {
      fs.closeSync(l.fd);
    }
    staging = stagingIn(o.dir, '.stasis-page-server-');
    const peer = peerName(sk);
    const res = servePages(sk, staging, peer, parentDir, (r) => moveInto(staging, o.dir, r.files));
    // As criu's: wait for the sender to close first (the TIME_WAIT is then its own).
    try { readFull(sk, Buffer.alloc(1), 0, 1); } catch { /* it is over either way */ }
    return { ...res, dir: o.dir, peer };
  } finally {
    if (sk >= 0) fs.closeSync(sk);
    if (staging) fs.rmSync(staging, { recursive: true, force: true });
  }
}
