// Kernel struct layouts (include/uapi/...), declared by their fields.
import { struct } from './struct';

/** struct iovec */
export const IOVEC = struct({ base: 'u64', len: 'u64' });
/** struct kernel_sigaction on x86-64 (what rt_sigaction takes). */
export const KSIGACTION = struct({ handler: 'u64', flags: 'u64', restorer: 'u64', mask: 'u64' });
/** stack_t */
export const STACK_T = struct({ ss_sp: 'u64', ss_flags: 'i32', ss_size: 'u64' });
/** struct timeval / struct timespec (64-bit) */
export const TIMEVAL = struct({ sec: 'i64', usec: 'i64' });
export const TIMESPEC = struct({ sec: 'i64', nsec: 'i64' });
/** struct itimerval: interval then value. */
export const ITIMERVAL = struct({ isec: 'u64', iusec: 'u64', vsec: 'u64', vusec: 'u64' });
/** struct itimerspec: interval then value. */
export const ITIMERSPEC = struct({ isec: 'u64', insec: 'u64', vsec: 'u64', vnsec: 'u64' });
/** struct rlimit64 */
export const RLIMIT64 = struct({ cur: 'u64', max: 'u64' });
/** struct sigevent (64 bytes): value, signo, notify, then a union (the thread id for SIGEV_THREAD_ID). */
export const SIGEVENT = struct({ value: 'u64', signo: 'i32', notify: 'i32', tid: 'i32' }, { size: 64 });
/** struct __ptrace_peeksiginfo_args */
export const PEEKSIGINFO_ARGS = struct({ off: 'u64', flags: 'u32', nr: 'i32' });
export const SIGINFO_SIZE = 128;
/** struct ptrace_rseq_configuration */
export const RSEQ_CONFIG = struct({ rseq_abi_pointer: 'u64', rseq_abi_size: 'u32', signature: 'u32', flags: 'u32', pad: 'u32' });
/** struct rseq: rseq_cs pointer at offset 8. */
export const RSEQ_CS_OFFSET = 8;
/** struct prctl_mm_map (include/uapi/linux/prctl.h) */
export const PRCTL_MM_MAP = struct({
  start_code: 'u64', end_code: 'u64', start_data: 'u64', end_data: 'u64', start_brk: 'u64', brk: 'u64',
  start_stack: 'u64', arg_start: 'u64', arg_end: 'u64', env_start: 'u64', env_end: 'u64', auxv: 'u64',
  auxv_size: 'u32', exe_fd: 'i32',
});
/** struct clone_args (v2, with set_tid and cgroup). */
export const CLONE_ARGS = struct({
  flags: 'u64', pidfd: 'u64', child_tid: 'u64', parent_tid: 'u64', exit_signal: 'u64', stack: 'u64', stack_size: 'u64',
  tls: 'u64', set_tid: 'u64', set_tid_size: 'u64', cgroup: 'u64',
});
/** struct pollfd (events and revents are shorts). */
export const POLLFD = struct({ fd: 'i32', events: 'u16', revents: 'u16' });
/** struct epoll_event: packed on x86-64. */
export const EPOLL_EVENT = struct({ events: 'u32', data: 'u64' }, { packed: true });
/** struct aio_ring: the header of an AIO completion ring (io_setup), io_events follow. */
export const AIO_RING = struct({ id: 'u32', nr: 'u32', head: 'u32', tail: 'u32', magic: 'u32', compat_features: 'u32', incompat_features: 'u32', header_length: 'u32' });
/** struct io_event */
export const IO_EVENT = struct({ data: 'u64', obj: 'u64', res: 'i64', res2: 'i64' });
/** struct iocb (little-endian x86-64 layout: aio_key before aio_rw_flags) */
export const IOCB = struct({
  aio_data: 'u64', aio_key: 'u32', aio_rw_flags: 'u32', aio_lio_opcode: 'u16', aio_reqprio: 'u16', aio_fildes: 'u32',
  aio_buf: 'u64', aio_nbytes: 'u64', aio_offset: 'i64', aio_reserved2: 'u64', aio_flags: 'u32', aio_resfd: 'u32',
});
/** struct kcmp_epoll_slot */
export const KCMP_EPOLL_SLOT = struct({ efd: 'u32', tfd: 'u32', toff: 'u32' });
/** struct file_handle header (handle bytes follow). */
export const FILE_HANDLE = struct({ handle_bytes: 'u32', handle_type: 'i32' });
/** struct flock (64-bit) */
export const FLOCK = struct({ l_type: 'u16', l_whence: 'u16', l_start: 'i64', l_len: 'i64', l_pid: 'i32' });
/** struct f_owner_ex */
export const F_OWNER_EX = struct({ type: 'i32', pid: 'i32' });
/** struct sockaddr_in / sockaddr_in6 (addresses as raw bytes, in network order). */
export const SOCKADDR_IN = struct({ family: 'u16', port: 'be16', addr: { bytes: 4 } }, { size: 16 });
export const SOCKADDR_IN6 = struct({ family: 'u16', port: 'be16', flowinfo: 'be32', addr: { bytes: 16 }, scope_id: 'u32' });
/** struct sockaddr_un: family then up to 108 bytes of path. */
export const SOCKADDR_UN_PATH_MAX = 108;
/** struct linger */
export const LINGER = struct({ onoff: 'i32', linger: 'i32' });
/** struct tcp_repair_opt */
export const TCP_REPAIR_OPT = struct({ opt_code: 'u32', opt_val: 'u32' });
/** struct tcp_repair_window */
export const TCP_REPAIR_WINDOW = struct({ snd_wl1: 'u32', snd_wnd: 'u32', max_window: 'u32', rcv_wnd: 'u32', rcv_wup: 'u32' });
/** The start of struct tcp_info that we read: state, ca_state, retransmits, probes, backoff, options, wscale. */
export const TCP_INFO_HEAD = struct({ state: 'u8', ca_state: 'u8', retransmits: 'u8', probes: 'u8', backoff: 'u8', options: 'u8', wscale: 'u8' }, { size: 104 });
/** struct msghdr */
export const MSGHDR = struct({ name: 'u64', namelen: 'u32', iov: 'u64', iovlen: 'u64', control: 'u64', controllen: 'u64', flags: 'i32' });
/** struct cmsghdr (data follows, 8-aligned). */
export const CMSGHDR = struct({ len: 'u64', level: 'i32', type: 'i32' });
/** struct ucred */
export const UCRED = struct({ pid: 'i32', uid: 'u32', gid: 'u32' });
/** struct __user_cap_header_struct / __user_cap_data_struct (v3: two data structs). */
export const CAP_HEADER = struct({ version: 'u32', pid: 'i32' });
export const CAP_DATA = struct({ effective: 'u32', permitted: 'u32', inheritable: 'u32' });
/** struct sched_param */
export const SCHED_PARAM = struct({ priority: 'i32' });
/** struct sock_fprog (filter pointer after padding) and struct sock_filter (8 bytes each). */
export const SOCK_FPROG = struct({ len: 'u16', filter: 'u64' });
export const SOCK_FILTER_SIZE = 8;
/** netlink: struct nlmsghdr, struct nlattr (rtattr has the same shape). */
export const NLMSGHDR = struct({ len: 'u32', type: 'u16', flags: 'u16', seq: 'u32', pid: 'u32' });
export const NLATTR = struct({ len: 'u16', type: 'u16' });
/** sock_diag requests and replies. */
export const UNIX_DIAG_REQ = struct({ family: 'u8', protocol: 'u8', pad: 'u16', states: 'u32', ino: 'u32', show: 'u32', cookie: { u32s: 2 } });
export const UNIX_DIAG_MSG = struct({ family: 'u8', type: 'u8', state: 'u8', pad: 'u8', ino: 'u32', cookie: { u32s: 2 } });
export const INET_DIAG_SOCKID = struct({ sport: 'be16', dport: 'be16', src: { bytes: 16 }, dst: { bytes: 16 }, if: 'u32', cookie: { u32s: 2 } });
export const INET_DIAG_REQ_V2 = struct({ family: 'u8', protocol: 'u8', ext: 'u8', pad: 'u8', states: 'u32', id: { bytes: 48 } });
export const INET_DIAG_MSG = struct({
  family: 'u8', state: 'u8', timer: 'u8', retrans: 'u8', id: { bytes: 48 }, expires: 'u32', rqueue: 'u32', wqueue: 'u32', uid: 'u32', inode: 'u32',
});
/** struct new_utsname: six 65-byte strings. */
export const NEW_UTSNAME = struct({
  sysname: { bytes: 65 }, nodename: { bytes: 65 }, release: { bytes: 65 }, version: { bytes: 65 }, machine: { bytes: 65 }, domainname: { bytes: 65 },
});
/** struct winsize (TIOCGWINSZ). */
export const WINSIZE = struct({ rows: 'u16', cols: 'u16', xpixel: 'u16', ypixel: 'u16' });
