// Sockets: families, types, options, message flags, TCP repair, ioctls.
export const AF = { UNSPEC: 0, UNIX: 1, INET: 2, INET6: 10, NETLINK: 16, PACKET: 17 } as const;
export const SOCK = { STREAM: 1, DGRAM: 2, RAW: 3, SEQPACKET: 5, NONBLOCK: 0o4000, CLOEXEC: 0o2000000 } as const;
export const SOL = { SOCKET: 1, IP: 0, TCP: 6, UDP: 17, IPV6: 41 } as const;
export const IPPROTO = { IP: 0, ICMP: 1, TCP: 6, UDP: 17, IPV6: 41, UDPLITE: 136, RAW: 255 } as const;
export const SO = {
  DEBUG: 1, REUSEADDR: 2, TYPE: 3, ERROR: 4, DONTROUTE: 5, BROADCAST: 6, SNDBUF: 7, RCVBUF: 8, KEEPALIVE: 9,
  OOBINLINE: 10, NO_CHECK: 11, PRIORITY: 12, LINGER: 13, REUSEPORT: 15, PASSCRED: 16, PEERCRED: 17,
  RCVLOWAT: 18, SNDLOWAT: 19, RCVTIMEO: 20, SNDTIMEO: 21, BINDTODEVICE: 25, ATTACH_FILTER: 26, DETACH_FILTER: 27,
  GET_FILTER: 26, PEERNAME: 28, ACCEPTCONN: 30, PASSSEC: 34, SNDBUFFORCE: 32, RCVBUFFORCE: 33, MARK: 36,
  PROTOCOL: 38, DOMAIN: 39, PEEK_OFF: 42, LOCK_FILTER: 44, BUF_LOCK: 72,
} as const;
/** SO_BUF_LOCK bits: buffer sizes set by the program (not autotuned). */
export const SOCK_BUF_LOCK = { SNDBUF: 1, RCVBUF: 2 } as const;
export const IFNAMSIZ = 16;
export const IPV6_V6ONLY = 26;
/** IPPROTO_IP (SOL_IP) options carried in ip_opts_entry. */
export const IP = { TOS: 1, TTL: 2, PKTINFO: 8, FREEBIND: 15 } as const;
export const TCP = {
  NODELAY: 1, MAXSEG: 2, CORK: 3, KEEPIDLE: 4, KEEPINTVL: 5, KEEPCNT: 6, SYNCNT: 7, LINGER2: 8, DEFER_ACCEPT: 9,
  WINDOW_CLAMP: 10, INFO: 11, QUICKACK: 12, CONGESTION: 13, USER_TIMEOUT: 18, REPAIR: 19, REPAIR_QUEUE: 20,
  QUEUE_SEQ: 21, REPAIR_OPTIONS: 22, TIMESTAMP: 24, NOTSENT_LOWAT: 25, REPAIR_WINDOW: 29,
} as const;
export const TCP_REPAIR_QUEUE = { NO: 0, RECV: 1, SEND: 2 } as const;
export const TCPOPT = { MAXSEG: 2, WINDOW: 3, SACK_PERM: 4, TIMESTAMP: 8 } as const;
export const TCPI_OPT = { TIMESTAMPS: 1, SACK: 2, WSCALE: 4 } as const;
export const TCP_STATE = {
  ESTABLISHED: 1, SYN_SENT: 2, SYN_RECV: 3, FIN_WAIT1: 4, FIN_WAIT2: 5, TIME_WAIT: 6, CLOSE: 7, CLOSE_WAIT: 8,
  LAST_ACK: 9, LISTEN: 10, CLOSING: 11,
} as const;
export const MSG = { OOB: 1, PEEK: 2, DONTROUTE: 4, CTRUNC: 8, TRUNC: 0x20, DONTWAIT: 0x40, NOSIGNAL: 0x4000, CMSG_CLOEXEC: 0x40000000 } as const;
export const SHUT = { RD: 0, WR: 1, RDWR: 2 } as const;
export const SCM_RIGHTS = 1;
export const SCM_CREDENTIALS = 2;
export const SIOC = { INQ: 0x541b, OUTQ: 0x5411, OUTQNSD: 0x894b } as const;
/** netlink and sock_diag (linux/netlink.h, linux/sock_diag.h, linux/unix_diag.h, linux/inet_diag.h). */
export const NETLINK = { SOCK_DIAG: 4 } as const;
export const NLM_F = { REQUEST: 1, DUMP: 0x300 } as const;
export const NLMSG = { ERROR: 2, DONE: 3 } as const;
export const SOCK_DIAG_BY_FAMILY = 20;
/** Netlink messages and attributes are padded to 4 bytes. */
export const NLMSG_ALIGNTO = 4;
export const UDIAG_SHOW = { NAME: 1, VFS: 2, PEER: 4, ICONS: 8, RQLEN: 0x10, MEMINFO: 0x20 } as const;
export const UNIX_DIAG = { NAME: 0, VFS: 1, PEER: 2, ICONS: 3, RQLEN: 4, MEMINFO: 5, SHUTDOWN: 6 } as const;
export const INET_DIAG = { SHUTDOWN: 8 } as const;
/** Every socket state (a bit per TCP_STATE value) in a sock_diag request. */
export const DIAG_ALL_STATES = 0xffffffff;
