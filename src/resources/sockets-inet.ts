// Inet sockets (IPv4 and IPv6): listening TCP sockets with their address,
// port, backlog and options; UDP and UDP-Lite sockets bound or connected,
// with their queued datagrams; established TCP connections with
// --tcp-established (tcp-stream.ts); ping sockets (SOCK_DGRAM ICMP/ICMPv6)
// and raw sockets of any protocol, with their options (ipopts.ts), refused
// with anything queued to read (no sender of ours could queue it again).
import { sys, sysTry, addressOf, abi, pollOne, ioctlInt } from '../sys';
import { inBuf, type RemoteTask } from '../compel/remote';
import { StasisError, ErrorCodes } from '../errors';
import { FD_TYPES, NO_FOWN, SK_SHUTDOWN } from '../images/criu';
import type { Msg } from '../images/schema';
import { defineFileUnit } from '../unit/unit';
import { inetSockets, procSockets, type InetDiag } from '../proc/sockdiag';
import { inNamespaceOf } from '../proc/ns';
import { grabSocket, getInt, sockName, dumpSockOpts, restoreSockOpts, restoreShutdown, setIntLocal } from './sockopts';
import { sendAll, peekQueue, skQueuesUnit, type Packet } from './sockqueue';
import { repairOn, repairOff, dumpTcpStream, loadTcpStream, restoreTcpStream, type RepairSocket } from './tcp-stream';
import { lockConnection, connOf } from './netlock';
import { carriedConnection, closingRefusal } from './tcp-closing';
import { dumpIpOpts, restoreIpOpts, freebindOpt } from './ipopts';
import { filesUnit } from './files';

const { AF, SOCK, SOL, SO, IPPROTO, IPV6_V6ONLY, TCP, TCP_STATE, TCP_INFO_HEAD, SOCKADDR_IN, SOCKADDR_IN6 } = abi;
const STATE_NAMES = Object.fromEntries(Object.entries(TCP_STATE).map(([k, v]) => [v, k]));

function domainOf(pid: number, fd: number): number {
  const s = grabSocket(pid, fd);
  try { return getInt(s, SOL.SOCKET, SO.DOMAIN); } finally { sysTry('close', s); }
}

/** sockaddr → (port, address as the u32 words CRIU stores: raw network-order bytes read little-endian). */
export function parseAddr(a: Buffer): { port: number; words: number[] } {
  if (a.length < 4) return { port: 0, words: [] };
  const family = a.readUInt16LE(0);
  const v = family === AF.INET ? SOCKADDR_IN.decode(a) : SOCKADDR_IN6.decode(a);
  const words: number[] = [];
  for (let i = 0; i + 4 <= v.addr.length; i += 4) words.push(v.addr.readUInt32LE(i));
  return { port: v.port, words };
}

export function makeSockaddr(family: number, port: number, words: number[]): Buffer {
  const addr = Buffer.alloc(family === AF.INET ? 4 : 16);
  words.forEach((w, i) => addr.writeUInt32LE(w >>> 0, i * 4));
  return family === AF.INET ? SOCKADDR_IN.encode({ family, port, addr }) : SOCKADDR_IN6.encode({ family, port, addr });
}

/** What stasis does with an inet socket of this type and protocol (undefined: not supported). */
type InetKind = 'tcp' | 'udp' | 'ping' | 'raw';
function inetKind(type: number, proto: number): InetKind | undefined {
  if (type === SOCK.STREAM && proto === IPPROTO.TCP) return 'tcp';
  if (type === SOCK.DGRAM && (proto === IPPROTO.UDP || proto === IPPROTO.UDPLITE)) return 'udp';
  if (type === SOCK.DGRAM && (proto === IPPROTO.ICMP || proto === abi.IPPROTO_ICMPV6)) return 'ping';
  if (type === SOCK.RAW) return 'raw';
  return undefined;
}

const PROTO_NAMES: Record<number, string> = { [IPPROTO.TCP]: 'tcp', [IPPROTO.UDP]: 'udp', [IPPROTO.UDPLITE]: 'udplite', [IPPROTO.ICMP]: 'icmp', [abi.IPPROTO_ICMPV6]: 'icmpv6' };
function protoName(type: number, proto: number): string {
  const name = PROTO_NAMES[proto] ?? `protocol ${proto}`;
  return type === SOCK.RAW ? `raw ${name}` : inetKind(type, proto) === 'ping' ? `ping (${name})` : name;
}

function loopback(family: number): number[] {
  return family === AF.INET ? [0x0100007f] : [0, 0, 0, 0x01000000];
}

interface DumpState {
  diag: Map<string, Map<number, InetDiag>>;
  /** Our copies of TCP sockets held in repair mode until the dump ends. */
  repair: RepairSocket[];
}

interface RestoreState {
  /** Our copies of restored connections, in repair mode until the tasks are about to run. */
  repair: RepairSocket[];
}

/**
 * Shutdown bits of a socket sock_diag does not list (a TCP socket whose
 * connection ended and whose port went to TIME_WAIT): one that reads the end
 * of input (POLLRDHUP) is taken as shut both ways, as such an end leaves it
 * (writing fails the same either way).
 */
function endedBits(s: number): number {
  return pollOne(s, abi.POLL.RDHUP, 0) & abi.POLL.RDHUP ? SK_SHUTDOWN.BOTH : 0;
}

/** bind() with IP_FREEBIND on for it only; a warning says the address is on no interface here. */
function bindFree(t: RemoteTask, fd: number, family: number, a: Buffer, warnings: string[], what: string): bigint {
  const [level, opt] = freebindOpt(family);
  t.call('setsockopt', fd, level, opt, inBuf(abi.i32s([1])), 4);
  const r = t.callRaw('bind', fd, inBuf(a), a.length);
  t.call('setsockopt', fd, level, opt, inBuf(abi.i32s([0])), 4);
  if (r === 0n) warnings.push(`socket bound to ${what}, an address on no interface here (IP_FREEBIND for the bind)`);
  return r;
}

/**
 * An ended connection comes back as a closed socket shut both ways: data it
 * still holds to read, or an error not yet reported (a reset), would be lost.
 */
/** A TCP socket with a peer, neither listening nor closed: what criu's --tcp-close drops. */
function isConnection(state: number, peerPort: number): boolean {
  return peerPort !== 0 && state !== TCP_STATE.LISTEN && state !== TCP_STATE.CLOSE;
}

function refuseEndedLeftovers(s: number, what: string): void {
  const inq = ioctlInt(s, abi.SIOC.INQ, what);
  if (inq > 0) throw new StasisError(ErrorCodes.UNSUPPORTED, `${what} still holds ${inq} byte(s) to read; not supported`);
  if (pollOne(s, 0, 0) & abi.POLL.ERR) throw new StasisError(ErrorCodes.UNSUPPORTED, `${what} has an error not yet reported (a reset?); not supported`);
}

/**
 * The sockets of pid's network namespace (the tree's: nested ones are
 * refused) of one family and kind: by protocol for TCP/UDP/UDP-Lite (sock_diag),
 * every raw or ping socket at once (from /proc).
 */
function diagOf(st: DumpState, pid: number, family: number, kind: InetKind, proto: number): Map<number, InetDiag> {
  const k = `${family}/${kind === 'raw' || kind === 'ping' ? kind : proto}`;
  let m = st.diag.get(k);
  if (!m) {
    m = kind === 'ping' || kind === 'raw' ? procSockets(pid, family, kind === 'ping' ? 'icmp' : 'raw') : inNamespaceOf(pid, 'net', () => inetSockets(family, proto));
    st.diag.set(k, m);
  }
  return m;
}

/** The peer sock_diag (or /proc) tells of a connected raw or ping socket, whose port 0 hides it from getpeername. */
function diagPeer(family: number, diag: InetDiag): { port: number; words: number[] } {
  const n = family === AF.INET ? 1 : 4;
  return { port: diag.dport, words: Array.from({ length: n }, (_, i) => diag.dst.readUInt32LE(i * 4)) };
}

/** Shutdown bits of a raw or ping socket (no diag): a read end shows as POLLRDHUP, both as POLLHUP; a send end alone changes nothing it does. */
function pollShutdown(s: number): number {
  const ev = pollOne(s, abi.POLL.RDHUP | abi.POLL.HUP, 0);
  return ev & abi.POLL.HUP ? SK_SHUTDOWN.BOTH : ev & abi.POLL.RDHUP ? SK_SHUTDOWN.READ : 0;
}

/** UDP-Lite's checksum coverage (0: the whole datagram), both ways. */
function dumpCscov(s: number): { udplite_send_cscov?: number; udplite_recv_cscov?: number } {
  const send = getInt(s, IPPROTO.UDPLITE, abi.UDPLITE_CSCOV.SEND), recv = getInt(s, IPPROTO.UDPLITE, abi.UDPLITE_CSCOV.RECV);
  return { ...(send ? { udplite_send_cscov: send } : {}), ...(recv ? { udplite_recv_cscov: recv } : {}) };
}

/**
 * Send the queued datagrams to the restored socket again, from their
 * original source address when it is free (the dumped senders are gone),
 * else from a port of ours (and say so).
 */
function requeueDatagrams(warnings: string[], e: Msg<'inet_sk_entry'>, queued: Packet[]): void {
  const src = e.src_addr ?? [];
  const to = makeSockaddr(e.family, e.src_port, src.every((w) => w === 0) ? loopback(e.family) : src);
  for (const q of queued) {
    const s = sys('socket', e.family, SOCK.DGRAM | SOCK.CLOEXEC, e.proto);
    try {
      if (q.addr) {
        setIntLocal(s, SOL.SOCKET, SO.REUSEADDR, 1);
        if (sysTry('bind', s, addressOf(q.addr), q.addr.length) < 0) {
          warnings.push(`UDP port ${e.src_port}: a queued datagram's source ${parseAddr(q.addr).port} is in use; re-sent from another port`);
        }
      }
      sendAll(s, q.data, to);
    } finally {
      sysTry('close', s);
    }
  }
}

function inetAddr(family: number, words: number[] | undefined, port: number): string {
  const b = Buffer.alloc((words ?? []).length * 4);
  (words ?? []).forEach((w, i) => b.writeUInt32LE(w >>> 0, i * 4));
  const host = family === AF.INET ? [...b].join('.') : `[${(b.toString('hex').match(/.{4}/g) ?? []).join(':')}]`;
  return `${host}:${port}`;
}

export const inetSocketUnit = defineFileUnit({
  name: 'inet sockets',
  dumpState: (): DumpState => ({ diag: new Map(), repair: [] }),
  // Connections going on with the task leave repair mode before it runs.
  beforeRelease(_ctx, st, how) { if (!how.kill) for (const s of st.repair) repairOff(s); },
  // Closed in repair mode, a killed task's connections vanish without a FIN or RST.
  afterRelease(_ctx, st) { for (const s of st.repair) sysTry('close', s.fd); },
  loadAfter: ['files'],
  /** Connections the restore cannot make, refused before anything is created (--tcp-close makes them closed). */
  load(ld) {
    const where = ld.images.path('files.img');
    if (ld.inventory.tcp_close && !ld.opts.tcpClose) throw new StasisError(ErrorCodes.USAGE, `${ld.images.path('inventory.img')}: dumped with --tcp-close: restore with --tcp-close too`);
    if (ld.opts.tcpClose) return;
    for (const f of ld.loaded(filesUnit).files.values()) {
      const e = f.isk;
      const refusal = e && e.type === SOCK.STREAM ? closingRefusal(e.state) : undefined;
      if (refusal) throw new StasisError(ErrorCodes.UNSUPPORTED, `${where}: TCP socket ${e!.ino} in state ${STATE_NAMES[e!.state] ?? e!.state}: ${refusal}; not supported (restore with --tcp-close to have it closed)`);
    }
  },
  restoreState: (): RestoreState => ({ repair: [] }),
  restorePhases: [{
    // Once the network lock is gone (the probe sent on leaving repair mode gets
    // through), before any task runs and could write to a socket in repair mode.
    name: 'tcp-repair-off', afterAll: true, after: ['network-unlock'],
    once(_ctx, _l, st) {
      for (const s of st.repair) {
        const r = repairOff(s);
        if (r < 0) throw new StasisError(ErrorCodes.RESTORE_FAILED, `cannot take a restored TCP connection out of repair mode (errno ${-r})`);
      }
    },
  }],
  // A failed restore: closed in repair mode (the tasks are dead), the connections vanish without a FIN or RST.
  cleanup(_ctx, st) { for (const s of st.repair) sysTry('close', s.fd); },
  file: {
    type: FD_TYPES.INETSK,
    field: 'isk',
    match: (d) => d.st.isSocket() && [AF.INET, AF.INET6].includes(domainOf(d.pid, d.fd) as 2),
    dump(ctx, d, id, st) {
      const s = grabSocket(d.pid, d.fd);
      let keep = false;
      try {
        const family = getInt(s, SOL.SOCKET, SO.DOMAIN);
        const type = getInt(s, SOL.SOCKET, SO.TYPE);
        const proto = getInt(s, SOL.SOCKET, SO.PROTOCOL);
        const kind = inetKind(type, proto);
        const what = `fd ${d.fd} of pid ${d.pid}: ${protoName(type, proto)} socket`;
        if (!kind) throw new StasisError(ErrorCodes.UNSUPPORTED, `fd ${d.fd} of pid ${d.pid}: inet socket type ${type} protocol ${proto} is not supported yet`);
        const local = parseAddr(sockName(s, false));
        const peerRaw = sockName(s, true);
        let peer = parseAddr(peerRaw);
        let state: number;
        const diag = diagOf(st, d.pid, family, kind, proto).get(d.st.ino);
        const shutdown = kind === 'ping' || kind === 'raw' ? pollShutdown(s) : diag ? diag.shutdown : endedBits(s);
        if (type === SOCK.STREAM) {
          const info = Buffer.alloc(TCP_INFO_HEAD.size), len = Buffer.alloc(4);
          len.writeUInt32LE(info.length);
          sys('getsockopt', s, SOL.TCP, TCP.INFO, addressOf(info), addressOf(len));
          state = TCP_INFO_HEAD.decode(info).state;
          const conn = `TCP connection (port ${local.port} ↔ ${peer.port})`;
          // criu's --tcp-close: a connection (whatever its state) is the socket only; it comes back closed.
          const dropped = ctx.opts.tcpClose === true && isConnection(state, peer.port);
          const refusal = dropped ? undefined : closingRefusal(state);
          if (refusal) {
            throw new StasisError(ErrorCodes.UNSUPPORTED, `fd ${d.fd} of pid ${d.pid}: ${conn} in state ${STATE_NAMES[state] ?? state}: ${refusal}; not supported`);
          }
          // A shutdown that sent nothing (SHUT_RD alone) leaves it ESTABLISHED.
          if (dropped) {
            // Nothing of the connection is kept: no lock, no queues.
          } else if (state === TCP_STATE.ESTABLISHED && shutdown) {
            throw new StasisError(ErrorCodes.UNSUPPORTED, `fd ${d.fd} of pid ${d.pid}: ${conn} shut down in a direction (shutdown()); not supported`);
          } else if (carriedConnection(state) && ctx.opts.tcpEstablished) {
            // Locked first: in repair mode the socket still takes (and acks) data,
            // which would be lost once its queues are read.
            lockConnection(ctx, connOf(family, local, peer));
            // Our copy stays open, in repair mode, until the task is gone (then the
            // peer sees nothing) or is let go again (then repair mode is left).
            st.repair.push(repairOn(s));
            keep = true;
            dumpTcpStream(ctx, d.st.ino, s, state);
          } else if (carriedConnection(state)) {
            const how = state === TCP_STATE.ESTABLISHED ? 'established' : `closing (${STATE_NAMES[state]})`;
            throw new StasisError(ErrorCodes.UNSUPPORTED, `fd ${d.fd} of pid ${d.pid}: ${how} TCP connection (port ${local.port} ↔ ${peer.port}); dump with --tcp-established to take it`);
          } else if (state === TCP_STATE.CLOSE && shutdown) {
            refuseEndedLeftovers(s, `fd ${d.fd} of pid ${d.pid}: TCP connection that ended (port ${local.port})`);
          } else if (state === TCP_STATE.LISTEN && diag?.rqueue) {
            // Connections in its accept queue have no fd: a new listener would
            // not have them (their peers reset, what they sent lost). criu too
            // refuses them unless told to skip them (tcp_skip_in_flight).
            throw new StasisError(ErrorCodes.UNSUPPORTED, `fd ${d.fd} of pid ${d.pid}: listening TCP socket (port ${local.port}) has ${diag.rqueue} connection(s) not yet accepted; not supported`);
          } else if (state !== TCP_STATE.LISTEN && state !== TCP_STATE.CLOSE) {
            throw new StasisError(ErrorCodes.UNSUPPORTED, `fd ${d.fd} of pid ${d.pid}: TCP connection in state ${STATE_NAMES[state] ?? state} (port ${local.port} ↔ ${peer.port}) is not supported`);
          }
        } else if (kind === 'udp') {
          state = peerRaw.length ? TCP_STATE.ESTABLISHED : TCP_STATE.CLOSE;
          const queues = ctx.state(skQueuesUnit);
          for (const packet of peekQueue(s, false)) queues.push({ id, packet });
        } else {
          // Raw and ping sockets: what they hold came from the network (or, for
          // ping, as the kernel's answers): no sender of ours can queue it again.
          if (pollOne(s, abi.POLL.IN, 0) & abi.POLL.IN) throw new StasisError(ErrorCodes.UNSUPPORTED, `${what} has data queued to read; not supported`);
          state = diag?.state === TCP_STATE.ESTABLISHED || peerRaw.length ? TCP_STATE.ESTABLISHED : TCP_STATE.CLOSE;
          if (state === TCP_STATE.ESTABLISHED && !peerRaw.length) {
            if (!diag) throw new StasisError(ErrorCodes.UNSUPPORTED, `${what}: connected, and its peer cannot be read`);
            peer = diagPeer(family, diag);
          }
        }
        // TCP_CORK and TCP_NODELAY of a socket not connected (a connection's are in its tcp_stream_entry).
        const tcpOpts = type === SOCK.STREAM && !carriedConnection(state)
          ? { cork: getInt(s, SOL.TCP, TCP.CORK) !== 0, nodelay: getInt(s, SOL.TCP, TCP.NODELAY) !== 0 } : undefined;
        return {
          id, ino: d.st.ino, family, type, proto, state, src_port: local.port, dst_port: peer.port, flags: d.flags,
          backlog: state === TCP_STATE.LISTEN ? diag?.wqueue ?? 128 : 0, src_addr: local.words, dst_addr: peer.words,
          fown: NO_FOWN, opts: dumpSockOpts(s, ctx.state(skQueuesUnit).some((q) => q.id === id), `fd ${d.fd} of pid ${d.pid}: inet socket ${d.st.ino}`), v6only: family === AF.INET6 ? getInt(s, SOL.IPV6, IPV6_V6ONLY) !== 0 : undefined,
          shutdown: shutdown || undefined, tcp_opts: tcpOpts, ip_opts: dumpIpOpts(s, { family, type, proto }, what),
          ...(kind === 'udp' && proto === IPPROTO.UDPLITE ? dumpCscov(s) : {}),
        };
      } finally {
        if (!keep) sysTry('close', s);
      }
    },
    open(ctx, tr, e, st) {
      const t = tr.task;
      const fd = t.callNum('socket', e.family, e.type | (e.flags & abi.O.NONBLOCK ? SOCK.NONBLOCK : 0), e.proto);
      if (e.type === SOCK.STREAM && ctx.opts.tcpClose && isConnection(e.state, e.dst_port)) {
        // --tcp-close: a socket never connected, shut both ways (ENOTCONN, but the bits are set), as criu.
        restoreSockOpts(t, fd, e.opts);
        t.callRaw('shutdown', fd, abi.SHUT.RDWR);
        return fd;
      }
      const what = `TCP connection ${e.ino} (port ${e.src_port} ↔ ${e.dst_port})`;
      if (e.type === SOCK.STREAM && carriedConnection(e.state)) {
        const stream = loadTcpStream(ctx.ckpt.images, e.ino);
        const s = grabSocket(tr.task.pid, fd);
        try {
          restoreSockOpts(t, fd, e.opts);
          st.repair.push(restoreTcpStream(s, stream, makeSockaddr(e.family, e.src_port, e.src_addr ?? []), makeSockaddr(e.family, e.dst_port, e.dst_addr ?? []), e.opts, e.state, what));
          // Our FIN is back (restoreTcpStream); a read side shut as well is a flag only.
          if (e.state !== TCP_STATE.ESTABLISHED && (e.shutdown ?? 0) & SK_SHUTDOWN.READ) sys('shutdown', s, abi.SHUT.RD, 0, 0, 0, 0, what);
        } catch (err) {
          sysTry('close', s);
          throw err;
        }
        return fd;
      }
      restoreSockOpts(t, fd, e.opts);
      if (e.tcp_opts?.nodelay) t.call('setsockopt', fd, SOL.TCP, TCP.NODELAY, inBuf(abi.i32s([1])), 4);
      if (e.tcp_opts?.cork) t.call('setsockopt', fd, SOL.TCP, TCP.CORK, inBuf(abi.i32s([1])), 4);
      // A raw socket has its protocol as port: IPV6_V6ONLY is refused it (and means nothing to it).
      if (e.family === AF.INET6 && e.v6only && e.type !== SOCK.RAW) t.call('setsockopt', fd, SOL.IPV6, IPV6_V6ONLY, inBuf(abi.i32s([1])), 4);
      restoreIpOpts(t, fd, e, e.ip_opts);
      if (e.udplite_send_cscov) t.call('setsockopt', fd, IPPROTO.UDPLITE, abi.UDPLITE_CSCOV.SEND, inBuf(abi.i32s([e.udplite_send_cscov])), 4);
      if (e.udplite_recv_cscov) t.call('setsockopt', fd, IPPROTO.UDPLITE, abi.UDPLITE_CSCOV.RECV, inBuf(abi.i32s([e.udplite_recv_cscov])), 4);
      const addrSet = (e.src_addr ?? []).some((w) => w !== 0);
      // A raw socket's port is its protocol, taken at socket(): bound only to an address.
      const bound = e.type === SOCK.RAW ? addrSet : e.src_port !== 0 || addrSet;
      if (bound) {
        const a = makeSockaddr(e.family, e.src_port, e.src_addr ?? []);
        // A TCP connection that ended (closed, shut both ways) left its port to
        // TIME_WAIT sockets: bound in repair mode, which takes it regardless.
        const ended = e.type === SOCK.STREAM && e.state === TCP_STATE.CLOSE && !!e.shutdown;
        if (ended) t.call('setsockopt', fd, SOL.TCP, TCP.REPAIR, inBuf(abi.i32s([1])), 4);
        let r = t.callRaw('bind', fd, inBuf(a), a.length);
        // An address on no interface here: bound as IP_FREEBIND lets it be (the
        // program may have bound it that way and turned the option off since).
        if (r === BigInt(-abi.ERRNO.EADDRNOTAVAIL) && !e.ip_opts?.freebind) r = bindFree(t, fd, e.family, a, ctx.warnings, inetAddr(e.family, e.src_addr, e.src_port));
        if (ended) {
          // Leaving repair mode resets the reuse flag.
          t.call('setsockopt', fd, SOL.TCP, TCP.REPAIR, inBuf(abi.i32s([0])), 4);
          if (e.opts.reuseaddr) t.call('setsockopt', fd, SOL.SOCKET, SO.REUSEADDR, inBuf(abi.i32s([1])), 4);
        }
        if (r < 0n) throw new StasisError(ErrorCodes.RESTORE_FAILED, `cannot bind ${protoName(e.type, e.proto)} socket to ${inetAddr(e.family, e.src_addr, e.src_port)} again (errno ${-r}): is it in use?`);
      }
      if (e.state === TCP_STATE.LISTEN) t.call('listen', fd, e.backlog);
      if (e.type !== SOCK.STREAM && e.state === TCP_STATE.ESTABLISHED) {
        const a = makeSockaddr(e.family, e.dst_port, e.dst_addr ?? []);
        t.call('connect', fd, inBuf(a), a.length);
      }
      const queued = ctx.loaded(skQueuesUnit).get(e.id) ?? [];
      if (queued.length) requeueDatagrams(ctx.warnings, e, queued);
      restoreShutdown(t, fd, e.shutdown, `${protoName(e.type, e.proto)} socket ${e.ino}`);
      return fd;
    },
    describe(k) {
      const proto = protoName(k.type, k.proto);
      const state = k.state === TCP_STATE.LISTEN ? ' listening' : k.state === TCP_STATE.ESTABLISHED ? ` → ${inetAddr(k.family, k.dst_addr, k.dst_port)}` : '';
      return `${proto} ${inetAddr(k.family, k.src_addr, k.src_port)}${state}`;
    },
  },
});

