// open(2) flags, fcntl(2) commands, file locks, seals, splice flags, *at() flags.
export const O = {
  RDONLY: 0, WRONLY: 1, RDWR: 2, ACCMODE: 3, CREAT: 0o100, EXCL: 0o200, NOCTTY: 0o400, TRUNC: 0o1000,
  APPEND: 0o2000, NONBLOCK: 0o4000, DSYNC: 0o10000, ASYNC: 0o20000, DIRECT: 0o40000, LARGEFILE: 0o100000,
  DIRECTORY: 0o200000, NOFOLLOW: 0o400000, NOATIME: 0o1000000, CLOEXEC: 0o2000000, PATH: 0o10000000,
  /** O_TMPFILE is this bit with O_DIRECTORY. */
  TMPFILE_BIT: 0o20000000,
} as const;

export const F = {
  DUPFD: 0, GETFD: 1, SETFD: 2, GETFL: 3, SETFL: 4, GETLK: 5, SETLK: 6, SETLKW: 7, SETOWN: 8, GETOWN: 9,
  SETSIG: 10, GETSIG: 11, SETOWN_EX: 15, GETOWN_EX: 16, GETOWNER_UIDS: 17, OFD_GETLK: 36, OFD_SETLK: 37, OFD_SETLKW: 38,
  SETLEASE: 1024, GETLEASE: 1025, DUPFD_CLOEXEC: 1030, SETPIPE_SZ: 1031, GETPIPE_SZ: 1032,
  ADD_SEALS: 1033, GET_SEALS: 1034,
} as const;
export const FD_CLOEXEC = 1;
/** l_type of struct flock, and lease types. */
export const LOCK_TYPE = { RDLCK: 0, WRLCK: 1, UNLCK: 2 } as const;
/** flock(2) operations. */
export const LOCK = { SH: 1, EX: 2, NB: 4, UN: 8 } as const;
/** File type bits of st_mode (inode(7)). */
export const S_IF = { MT: 0o170000, DIR: 0o040000, REG: 0o100000, FIFO: 0o010000, LNK: 0o120000, CHR: 0o020000, BLK: 0o060000, SOCK: 0o140000 } as const;
/** Longest path the kernel takes or gives back (readlink), with its NUL. */
export const PATH_MAX = 4096;
export const SEEK = { SET: 0, CUR: 1, END: 2, DATA: 3, HOLE: 4 } as const;
export const F_OWNER = { TID: 0, PID: 1, PGRP: 2 } as const;
export const MFD = { CLOEXEC: 1, ALLOW_SEALING: 2, HUGETLB: 4, NOEXEC_SEAL: 8, EXEC: 0x10 } as const;
export const SPLICE_F_NONBLOCK = 2;
export const AT_FDCWD = -100;
export const AT = { SYMLINK_NOFOLLOW: 0x100, REMOVEDIR: 0x200, EMPTY_PATH: 0x1000 } as const;
export const EFD = { SEMAPHORE: 1, NONBLOCK: 0o4000, CLOEXEC: 0o2000000 } as const;
export const TFD = { NONBLOCK: 0o4000, CLOEXEC: 0o2000000, TIMER_ABSTIME: 1 } as const;
/** _IOW('T', 0, u64): needs CONFIG_CHECKPOINT_RESTORE, as kcmp does. */
export const TFD_IOC_SET_TICKS = 0x40085400;
export const SFD_NONBLOCK = 0o4000;
export const IN_NONBLOCK = 0o4000;
/** poll(2) events. */
export const POLL = { IN: 0x1, ERR: 0x8, HUP: 0x10, RDHUP: 0x2000 } as const;
export const EPOLL_CTL = { ADD: 1, DEL: 2, MOD: 3 } as const;
/** ioctl: a terminal's window size (struct winsize); fails with ENOTTY on anything else. */
export const TIOCGWINSZ = 0x5413;
