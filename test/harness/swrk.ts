// A `criu swrk` client, as runc and go-criu are: a SOCK_SEQPACKET pair, the
// server end inherited by bin/criu at the fd number named on its command
// line, one criu_req per packet, notifications answered one by one. Waits
// poll the socket without blocking the event loop (the child's exit and
// output are events).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { socketpair, sendPacket, recvPacket, pollOne, shutdownSocket, abi } from '../../src/sys';
import { encode, decode } from '../../src/images/codec';
import { enumValues, type Msg } from '../../src/images/schema';
import { ROOT } from './build';
import { sleep } from './process';

export const CRIU = path.join(ROOT, 'bin', 'criu');
export const REQ = enumValues('criu_req_type');
export type CriuReq = Msg<'criu_req'>;
export type CriuResp = Msg<'criu_resp'>;
export type CriuOpts = Msg<'criu_opts'>;

export interface Notification { script: string; pid?: number; fds: number[] }

/** How the client answers a notification: ack (default), report a failure, or go away. */
export type Answer = 'ok' | 'fail' | 'shutdown' | 'close';

export interface Exchange {
  notifications: Notification[];
  /** The final response (undefined if the server closed without one). */
  resp?: CriuResp;
}

export class SwrkClient {
  readonly child: ChildProcess;
  stdout = '';
  stderr = '';
  private closed = false;
  private readonly exited: Promise<number | null>;

  private constructor(readonly fd: number, child: ChildProcess) {
    this.child = child;
    child.stdout!.on('data', (d) => { this.stdout += d; });
    child.stderr!.on('data', (d) => { this.stderr += d; });
    this.exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve(signal ? -1 : code)));
  }

  /**
   * Start `bin/criu swrk N` with the server end at fd N (not always 3:
   * go-criu passes its raw socketpair fd); `fds` are more fds of ours for
   * the child at their index (inherit_fd numbers).
   */
  static start(opts: { serverFd?: number; stdio?: (number | 'ignore' | 'pipe')[]; env?: Record<string, string> } = {}): SwrkClient {
    const n = opts.serverFd ?? 5;
    const [ours, theirs] = socketpair(abi.SOCK.SEQPACKET);
    const stdio: (number | 'ignore' | 'pipe')[] = [...(opts.stdio ?? ['ignore', 'pipe', 'pipe'])];
    while (stdio.length < n) stdio.push('ignore');
    stdio[n] = theirs;
    if (stdio[1] !== 'pipe' || stdio[2] !== 'pipe') throw new Error('the client watches the server\'s stdout and stderr');
    const child = spawn(CRIU, ['swrk', String(n)], { stdio, env: { ...process.env, ...opts.env } });
    fs.closeSync(theirs);
    return new SwrkClient(ours, child);
  }

  get pid(): number { return this.child.pid!; }

  send(req: CriuReq): void { this.sendRaw(encode('criu_req', req)); }

  sendRaw(buf: Buffer): void {
    const r = sendPacket(this.fd, buf);
    if (r !== buf.length) throw new Error(`sendmsg to criu swrk: ${r}`);
  }

  /** The next response, with any fds passed; undefined at end of stream. */
  async recv(timeoutMs = 120000): Promise<{ resp: CriuResp; fds: number[] } | undefined> {
    const end = Date.now() + timeoutMs;
    while (!pollOne(this.fd, abi.POLL.IN | abi.POLL.HUP, 0)) {
      if (Date.now() > end) throw new Error(`no answer from criu swrk (pid ${this.pid}) within ${timeoutMs} ms; stderr: ${this.stderr}`);
      await sleep(5);
    }
    const p = recvPacket(this.fd, 65536, { dontWait: true });
    if (typeof p === 'number') throw new Error(`recvmsg from criu swrk: errno ${-p}`);
    if (p.length === 0) return undefined;
    if (p.length > 8192) throw new Error(`a response of ${p.length} bytes would overflow go-criu's 8 KiB buffer`);
    return { resp: decode('criu_resp', p.data), fds: p.fds };
  }

  /**
   * Send `req`, answer its notifications (`answer` says how, per script;
   * `seen` runs first, while the server waits for the answer), and return
   * them with the final response.
   */
  async call(req: CriuReq, answer: (n: Notification) => Answer = () => 'ok', seen?: (n: Notification) => void | Promise<void>): Promise<Exchange> {
    this.send(req);
    const notifications: Notification[] = [];
    for (;;) {
      const m = await this.recv();
      if (!m) return { notifications };
      if (m.resp.type !== REQ.NOTIFY) return { notifications, resp: m.resp };
      const n = { script: m.resp.notify?.script ?? '', pid: m.resp.notify?.pid, fds: m.fds };
      notifications.push(n);
      await seen?.(n);
      const a = answer(n);
      if (a === 'shutdown') { shutdownSocket(this.fd, abi.SHUT.WR); continue; }
      if (a === 'close') { this.close(); return { notifications }; }
      this.send({ type: REQ.NOTIFY, notify_success: a === 'ok' });
    }
  }

  /** Wait for the server to exit: its status (-1 if killed by a signal). */
  async exit(timeoutMs = 120000): Promise<number | null> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`criu swrk (pid ${this.pid}) did not exit within ${timeoutMs} ms`)), timeoutMs); });
    try { return await Promise.race([this.exited, timeout]); } finally { clearTimeout(timer); }
  }

  close(): void {
    if (!this.closed) fs.closeSync(this.fd);
    this.closed = true;
  }

  /** Cleanup after a failed test: the server killed, the socket closed. */
  async kill(): Promise<void> {
    this.close();
    if (this.child.exitCode === null && this.child.signalCode === null) {
      this.child.kill('SIGKILL');
      await this.exited;
    }
  }
}

/** A directory of ours as a caller's fd (criu opens /proc/CALLER/fd/N). */
export function openDir(dir: string): number {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  return fs.openSync(dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
}

// runc and podman with bin/criu as their criu. runc 1.1.x takes `--criu PATH`;
// podman (and runc ≥ 1.2) run `criu` from PATH: a directory holding only a
// `criu` link to bin/criu goes first in their PATH, so Debian's /usr/sbin/criu
// is never what they find.

/** A directory whose only entry is `criu` → bin/criu (for PATH). */
export function criuPathDir(parent: string): string {
  const dir = path.join(parent, 'criu-bin');
  fs.mkdirSync(dir, { recursive: true });
  fs.symlinkSync(CRIU, path.join(dir, 'criu'));
  return dir;
}

/** The environment for runc and podman: our criu first in PATH. */
export function criuEnv(criuDir: string): NodeJS.ProcessEnv {
  return { ...process.env, PATH: `${criuDir}:${process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin'}` };
}

export interface RunResult { status: number | null; stdout: string; stderr: string }

/**
 * Run a tool (runc, podman) to its end with `env`; stdin /dev/null, output
 * captured — or, with `devNull`, all three /dev/null (what a detached
 * container started or restored by runc gets as its stdio; runc's own errors
 * then go to its --log file).
 */
export function runTool(cmd: string, args: string[], o: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number; devNull?: boolean } = {}): RunResult {
  const stdio = o.devNull ? 'ignore' : ['ignore', 'pipe', 'pipe'];
  const r = spawnSync(cmd, args, { cwd: o.cwd, env: o.env, encoding: 'utf8', stdio: stdio as 'ignore', timeout: o.timeoutMs ?? 120000 });
  if (r.error) throw new Error(`${cmd} ${args.join(' ')}: ${r.error.message}`);
  return { status: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

export function describeRun(what: string, r: RunResult): string {
  return `${what}: exit ${r.status}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`;
}
