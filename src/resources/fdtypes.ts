/** fd_types enum of CRIU's fdinfo.proto. */
export const FD_TYPES = {
  UND: 0, REG: 1, PIPE: 2, FIFO: 3, INETSK: 4, UNIXSK: 5, EVENTFD: 6, EVENTPOLL: 7, INOTIFY: 8, SIGNALFD: 9,
  PACKETSK: 10, TTY: 11, FANOTIFY: 12, NETLINKSK: 13, NS: 14, TUNF: 15, EXT: 16, TIMERFD: 17, MEMFD: 18,
  BPFMAP: 19, CTL_TTY: 65534, AUTOFS_PIPE: 65535,
} as const;
export const FD_TYPE_NAMES: Record<number, string> = Object.fromEntries(Object.entries(FD_TYPES).map(([k, v]) => [v, k]));
