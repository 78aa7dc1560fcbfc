// Raw, ping, UDP-Lite, packet and netlink sockets: option levels, option
// names and the structs they take (from the kernel's uapi headers).

import { struct } from './struct';

/** SOCK_PACKET: the obsolete packet socket type (bound by device name). */
export const SOCK_PACKET = 10;

/** Raw and ping sockets' own levels and options. */
export const SOL_RAW = 255;
export const SOL_ICMPV6 = 58;
export const ICMP_FILTER = 1;
export const ICMPV6_FILTER = 1;
/** struct icmp_filter is one u32, struct icmp6_filter eight. */
export const ICMP_FILTER_WORDS = 1;
export const ICMPV6_FILTER_WORDS = 8;
export const IP_RAW = { HDRINCL: 3, NODEFRAG: 22 } as const;
export const IPV6 = { CHECKSUM: 7, RECVPKTINFO: 49, HDRINCL: 36, FREEBIND: 78 } as const;
export const IPPROTO_ICMPV6 = 58;

/** UDP-Lite checksum coverage (SOL_UDPLITE = IPPROTO_UDPLITE). */
export const UDPLITE_CSCOV = { SEND: 10, RECV: 11 } as const;

/** Packet sockets (SOL_PACKET). */
export const SOL_PACKET = 263;
export const PACKET = {
  ADD_MEMBERSHIP: 1, DROP_MEMBERSHIP: 2, RX_RING: 5, COPY_THRESH: 7, AUXDATA: 8, ORIGDEV: 9, VERSION: 10,
  RESERVE: 12, TX_RING: 13, LOSS: 14, VNET_HDR: 15, TIMESTAMP: 17, FANOUT: 18, QDISC_BYPASS: 20,
  IGNORE_OUTGOING: 23,
} as const;
/** struct packet_mreq_max (the kernel takes it in place of packet_mreq). */
export const PACKET_MREQ = struct({ ifindex: 'i32', type: 'u16', alen: 'u16', address: { bytes: 32 } });
/** struct tpacket_req3 (V1/V2 rings read its first four fields). */
export const TPACKET_REQ3 = struct({
  block_size: 'u32', block_nr: 'u32', frame_size: 'u32', frame_nr: 'u32', retire_blk_tov: 'u32', sizeof_priv: 'u32', feature_req_word: 'u32',
});
export const SOCKADDR_LL = struct({ family: 'u16', protocol: 'be16', ifindex: 'i32', hatype: 'u16', pkttype: 'u8', halen: 'u8', addr: { bytes: 8 } });
/** SOCK_PACKET's address: struct sockaddr, the device name in sa_data. */
export const SOCKADDR_PKT = struct({ family: 'u16', device: { bytes: 14 } });

/** packet_diag (sock_diag for AF_PACKET). */
export const PACKET_DIAG_REQ = struct({ family: 'u8', protocol: 'u8', pad: 'u16', ino: 'u32', show: 'u32', cookie: { u32s: 2 } });
export const PACKET_DIAG_MSG = struct({ family: 'u8', type: 'u8', num: 'u16', ino: 'u32', cookie: { u32s: 2 } });
export const PACKET_SHOW = { INFO: 1, MCLIST: 2, RING_CFG: 4, FANOUT: 8 } as const;
export const PACKET_DIAG = { INFO: 0, MCLIST: 1, RX_RING: 2, TX_RING: 3, FANOUT: 4 } as const;
export const PACKET_DIAG_INFO = struct({ index: 'u32', version: 'u32', reserve: 'u32', copy_thresh: 'u32', tstamp: 'u32', flags: 'u32' });
export const PDI = { RUNNING: 1, AUXDATA: 2, ORIGDEV: 4, VNETHDR: 8, LOSS: 0x10 } as const;
export const PACKET_DIAG_MCLIST = struct({ index: 'u32', count: 'u32', type: 'u16', alen: 'u16', addr: { bytes: 32 } });
export const PACKET_DIAG_RING = struct({
  block_size: 'u32', block_nr: 'u32', frame_size: 'u32', frame_nr: 'u32', retire_tmo: 'u32', sizeof_priv: 'u32', features: 'u32',
});

/** Netlink sockets (SOL_NETLINK). */
export const SOL_NETLINK = 270;
/** SOL_NETLINK options (NETLINK, beside, names protocols). */
export const NETLINK_OPT = {
  ADD_MEMBERSHIP: 1, DROP_MEMBERSHIP: 2, PKTINFO: 3, BROADCAST_ERROR: 4, NO_ENOBUFS: 5, LISTEN_ALL_NSID: 8,
  LIST_MEMBERSHIPS: 9, CAP_ACK: 10, EXT_ACK: 11, GET_STRICT_CHK: 12,
} as const;
export const SOCKADDR_NL = struct({ family: 'u16', pad: 'u16', pid: 'u32', groups: 'u32' });
/** netlink_diag state of a connected socket. */
export const NETLINK_CONNECTED = 1;

/** SIOCGIFNAME: an interface's name by index (struct ifreq). */
export const SIOCGIFNAME = 0x8910;
export const IFREQ = struct({ name: { bytes: 16 }, ifindex: 'i32' }, { size: 40 });
