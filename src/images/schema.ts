// CRIU's image schemas, written in our own compact form. Field numbers,
// types and labels follow CRIU's published images/*.proto so that images we
// write decode with `crit` and CRIU's own images decode with us (a test
// compares every field with the descriptors of Debian's pycriu). Only what
// stasis reads or writes is listed; unknown fields are skipped when decoding.
//
// Each field is "label type number", e.g. "required uint64 3". The schema is
// `as const`, so every message has a TypeScript type: Msg<'timerfd_entry'>,
// 64-bit integers as bigint, bytes as Buffer, enums as numbers.
// CRIU's RPC messages (criu swrk) are declared in rpc-schema.ts and merged in.
import { RPC_MESSAGES, RPC_ENUMS } from './rpc-schema';

const messages = {
  inventory_entry: {
    img_version: 'required uint32 1', fdinfo_per_id: 'optional bool 2', root_ids: 'optional task_kobj_ids_entry 3',
    ns_per_id: 'optional bool 4', root_cg_set: 'optional uint32 5', lsmtype: 'optional lsmtype 6',
    dump_uptime: 'optional uint64 8', pre_dump_mode: 'optional uint32 9', tcp_close: 'optional bool 10',
    network_lock_method: 'optional uint32 11', dump_criu_run_id: 'optional string 13',
  },
  task_kobj_ids_entry: {
    vm_id: 'required uint32 1', files_id: 'required uint32 2', fs_id: 'required uint32 3', sighand_id: 'required uint32 4',
    pid_ns_id: 'optional uint32 5', net_ns_id: 'optional uint32 6', ipc_ns_id: 'optional uint32 7',
    uts_ns_id: 'optional uint32 8', mnt_ns_id: 'optional uint32 9', user_ns_id: 'optional uint32 10',
    cgroup_ns_id: 'optional uint32 11', time_ns_id: 'optional uint32 12',
  },
  pstree_entry: {
    pid: 'required uint32 1', ppid: 'required uint32 2', pgid: 'required uint32 3', sid: 'required uint32 4',
    threads: 'repeated uint32 5',
  },
  core_entry: {
    mtype: 'required march 1', thread_info: 'optional thread_info_x86 2', tc: 'optional task_core_entry 3',
    ids: 'optional task_kobj_ids_entry 4', thread_core: 'optional thread_core_entry 5',
  },
  task_core_entry: {
    task_state: 'required uint32 1', exit_code: 'required uint32 2', personality: 'required uint32 3',
    flags: 'required uint32 4', blk_sigset: 'required uint64 5', comm: 'required string 6',
    timers: 'optional task_timers_entry 7', rlimits: 'optional task_rlimits_entry 8', cg_set: 'optional uint32 9',
    signals_s: 'optional signal_queue_entry 10', old_seccomp_mode: 'optional seccomp_mode 11',
    old_seccomp_filter: 'optional uint32 12', loginuid: 'optional uint32 13', oom_score_adj: 'optional int32 14',
    sigactions: 'repeated sa_entry 15', child_subreaper: 'optional bool 18', blk_sigset_extended: 'optional uint64 20',
    stop_signo: 'optional uint32 21', membarrier_registration_mask: 'optional uint32 22',
  },
  task_timers_entry: {
    real: 'required itimer_entry 1', virt: 'required itimer_entry 2', prof: 'required itimer_entry 3',
    posix: 'repeated posix_timer_entry 4',
  },
  itimer_entry: { isec: 'required uint64 1', iusec: 'required uint64 2', vsec: 'required uint64 3', vusec: 'required uint64 4' },
  posix_timer_entry: {
    it_id: 'required uint32 1', clock_id: 'required uint32 2', si_signo: 'required uint32 3',
    it_sigev_notify: 'required uint32 4', sival_ptr: 'required uint64 5', overrun: 'required uint32 6',
    isec: 'required uint64 7', insec: 'required uint64 8', vsec: 'required uint64 9', vnsec: 'required uint64 10',
    notify_thread_id: 'optional int32 11',
  },
  task_rlimits_entry: { rlimits: 'repeated rlimit_entry 1' },
  rlimit_entry: { cur: 'required uint64 1', max: 'required uint64 2' },
  signal_queue_entry: { signals: 'repeated siginfo_entry 1' },
  siginfo_entry: { siginfo: 'required bytes 1' },
  sa_entry: {
    sigaction: 'required uint64 1', flags: 'required uint64 2', restorer: 'required uint64 3', mask: 'required uint64 4',
    compat_sigaction: 'optional bool 5', mask_extended: 'optional uint64 6',
  },
  thread_sas_entry: { ss_sp: 'required uint64 1', ss_size: 'required uint64 2', ss_flags: 'required uint32 3' },
  thread_core_entry: {
    futex_rla: 'required uint64 1', futex_rla_len: 'required uint32 2', sched_nice: 'optional sint32 3',
    sched_policy: 'optional uint32 4', sched_prio: 'optional uint32 5', blk_sigset: 'optional uint64 6',
    sas: 'optional thread_sas_entry 7', pdeath_sig: 'optional uint32 8', signals_p: 'optional signal_queue_entry 9',
    creds: 'optional creds_entry 10', seccomp_mode: 'optional seccomp_mode 11', seccomp_filter: 'optional uint32 12',
    comm: 'optional string 13', blk_sigset_extended: 'optional uint64 14', rseq_entry: 'optional rseq_entry 15', cg_set: 'optional uint32 16',
    cpu_affinity: 'repeated uint64 100', timer_slack_ns: 'optional uint64 101', ioprio: 'optional uint32 102',
  },
  creds_entry: {
    uid: 'required uint32 1', gid: 'required uint32 2', euid: 'required uint32 3', egid: 'required uint32 4',
    suid: 'required uint32 5', sgid: 'required uint32 6', fsuid: 'required uint32 7', fsgid: 'required uint32 8',
    cap_inh: 'repeated uint32 9', cap_prm: 'repeated uint32 10', cap_eff: 'repeated uint32 11',
    cap_bnd: 'repeated uint32 12', secbits: 'required uint32 13', groups: 'repeated uint32 14',
    no_new_privs: 'optional uint32 18', cap_amb: 'repeated uint32 19',
  },
  rseq_entry: {
    rseq_abi_pointer: 'required uint64 1', rseq_abi_size: 'required uint32 2', signature: 'required uint32 3',
    rseq_cs_pointer: 'optional uint64 4',
  },
  thread_info_x86: {
    clear_tid_addr: 'required uint64 1', gpregs: 'required user_x86_regs_entry 2',
    fpregs: 'required user_x86_fpregs_entry 3',
  },
  user_x86_regs_entry: {
    r15: 'required uint64 1', r14: 'required uint64 2', r13: 'required uint64 3', r12: 'required uint64 4',
    bp: 'required uint64 5', bx: 'required uint64 6', r11: 'required uint64 7', r10: 'required uint64 8',
    r9: 'required uint64 9', r8: 'required uint64 10', ax: 'required uint64 11', cx: 'required uint64 12',
    dx: 'required uint64 13', si: 'required uint64 14', di: 'required uint64 15', orig_ax: 'required uint64 16',
    ip: 'required uint64 17', cs: 'required uint64 18', flags: 'required uint64 19', sp: 'required uint64 20',
    ss: 'required uint64 21', fs_base: 'required uint64 22', gs_base: 'required uint64 23', ds: 'required uint64 24',
    es: 'required uint64 25', fs: 'required uint64 26', gs: 'required uint64 27', mode: 'optional user_x86_regs_mode 28',
  },
  user_x86_fpregs_entry: {
    cwd: 'required uint32 1', swd: 'required uint32 2', twd: 'required uint32 3', fop: 'required uint32 4',
    rip: 'required uint64 5', rdp: 'required uint64 6', mxcsr: 'required uint32 7', mxcsr_mask: 'required uint32 8',
    st_space: 'repeated uint32 9', xmm_space: 'repeated uint32 10', padding: 'repeated uint32 11',
    xsave: 'optional user_x86_xsave_entry 13',
  },
  user_x86_xsave_entry: {
    xstate_bv: 'required uint64 1', ymmh_space: 'repeated uint32 2', bndreg_state: 'repeated uint64 3',
    bndcsr_state: 'repeated uint64 4', opmask_reg: 'repeated uint64 5', zmm_upper: 'repeated uint64 6',
    hi16_zmm: 'repeated uint64 7', pkru: 'repeated uint32 8',
  },
  mm_entry: {
    mm_start_code: 'required uint64 1', mm_end_code: 'required uint64 2', mm_start_data: 'required uint64 3',
    mm_end_data: 'required uint64 4', mm_start_stack: 'required uint64 5', mm_start_brk: 'required uint64 6',
    mm_brk: 'required uint64 7', mm_arg_start: 'required uint64 8', mm_arg_end: 'required uint64 9',
    mm_env_start: 'required uint64 10', mm_env_end: 'required uint64 11', exe_file_id: 'required uint32 12',
    mm_saved_auxv: 'repeated uint64 13', vmas: 'repeated vma_entry 14', dumpable: 'optional int32 15',
    aios: 'repeated aio_ring_entry 16', thp_disabled: 'optional bool 17',
  },
  aio_ring_entry: { id: 'required uint64 1', nr_req: 'required uint32 2', ring_len: 'required uint32 3' },
  vma_entry: {
    start: 'required uint64 1', end: 'required uint64 2', pgoff: 'required uint64 3', shmid: 'required uint64 4',
    prot: 'required uint32 5', flags: 'required uint32 6', status: 'required uint32 7', fd: 'required sint64 8',
    madv: 'optional uint64 9', fdflags: 'optional uint32 10',
  },
  pagemap_head: { pages_id: 'required uint32 1' },
  pagemap_entry: {
    vaddr: 'required uint64 1', nr_pages: 'required uint32 2', in_parent: 'optional bool 3', flags: 'optional uint32 4',
    // CRIU 4.x: the count as uint64 (its name there is nr_pages, field 2's compat_nr_pages, which it writes 0).
    // Read through pagemapPages() (images/pagemap.ts); stasis writes field 2 only, which every criu reads.
    nr_pages64: 'optional uint64 5',
  },
  fs_entry: { cwd_id: 'required uint32 1', root_id: 'required uint32 2', umask: 'optional uint32 3' },
  fdinfo_entry: {
    id: 'required uint32 1', flags: 'required uint32 2', type: 'required fd_types 3', fd: 'required uint32 4',
  },
  file_entry: {
    type: 'required fd_types 1', id: 'required uint32 2', reg: 'optional reg_file_entry 3',
    isk: 'optional inet_sk_entry 4', psk: 'optional packet_sock_entry 6', nlsk: 'optional netlink_sk_entry 7', efd: 'optional eventfd_file_entry 8', epfd: 'optional eventpoll_file_entry 9',
    sgfd: 'optional signalfd_entry 10', tfd: 'optional timerfd_entry 12', ify: 'optional inotify_file_entry 13',
    usk: 'optional unix_sk_entry 16',
    fifo: 'optional fifo_entry 17', pipe: 'optional pipe_entry 18', tty: 'optional tty_file_entry 19',
    memfd: 'optional memfd_file_entry 20', pidfd: 'optional pidfd_entry 22',
  },
  winsize_entry: { ws_row: 'required uint32 1', ws_col: 'required uint32 2', ws_xpixel: 'required uint32 3', ws_ypixel: 'required uint32 4' },
  termios_entry: {
    c_iflag: 'required uint32 1', c_oflag: 'required uint32 2', c_cflag: 'required uint32 3', c_lflag: 'required uint32 4',
    c_line: 'required uint32 5', c_ispeed: 'required uint32 6', c_ospeed: 'required uint32 7', c_cc: 'repeated uint32 8',
  },
  tty_pty_entry: { index: 'required uint32 1' },
  tty_data_entry: { tty_id: 'required uint32 1', data: 'required bytes 2' },
  tty_info_entry: {
    id: 'required uint32 1', type: 'required TtyType 2', locked: 'required bool 3', exclusive: 'required bool 4',
    packet_mode: 'required bool 5', sid: 'required uint32 6', pgrp: 'required uint32 7', rdev: 'required uint32 8',
    termios: 'optional termios_entry 9', termios_locked: 'optional termios_entry 10', winsize: 'optional winsize_entry 11',
    pty: 'optional tty_pty_entry 12', dev: 'optional uint32 13', uid: 'optional uint32 14', gid: 'optional uint32 15',
  },
  tty_file_entry: { id: 'required uint32 1', tty_info_id: 'required uint32 2', flags: 'required uint32 3', fown: 'required fown_entry 4', regf_id: 'optional uint32 6' },
  fh_entry: { bytes: 'required uint32 1', type: 'required uint32 2', handle: 'repeated uint64 3', path: 'optional string 4', mnt_id: 'optional uint32 5' },
  inotify_wd_entry: {
    id: 'required uint32 1', i_ino: 'required uint64 2', mask: 'required uint32 3', ignored_mask: 'required uint32 4',
    s_dev: 'required uint32 5', wd: 'required uint32 6', f_handle: 'required fh_entry 7',
  },
  inotify_file_entry: { id: 'required uint32 1', flags: 'required uint32 2', fown: 'required fown_entry 4', wd: 'repeated inotify_wd_entry 5' },
  fifo_entry: { id: 'required uint32 1', pipe_id: 'required uint32 2', regf_id: 'optional uint32 3' },
  memfd_file_entry: { id: 'required uint32 1', flags: 'required uint32 2', pos: 'required uint64 3', fown: 'required fown_entry 4', inode_id: 'required uint32 5' },
  memfd_inode_entry: {
    name: 'required string 1', uid: 'required uint32 2', gid: 'required uint32 3', size: 'required uint64 4',
    shmid: 'required uint32 5', seals: 'required uint32 6', inode_id: 'required uint64 7', mode: 'optional uint32 9',
  },
  pidfd_entry: { id: 'required uint32 1', ino: 'required uint32 2', flags: 'required uint32 3', nspid: 'required int32 4', fown: 'required fown_entry 5' },
  eventfd_file_entry: { id: 'required uint32 1', flags: 'required uint32 2', fown: 'required fown_entry 3', counter: 'required uint64 4' },
  eventpoll_tfd_entry: {
    id: 'required uint32 1', tfd: 'required uint32 2', events: 'required uint32 3', data: 'required uint64 4',
    dev: 'optional uint32 5', inode: 'optional uint64 6', pos: 'optional uint64 7',
  },
  eventpoll_file_entry: { id: 'required uint32 1', flags: 'required uint32 2', fown: 'required fown_entry 3', tfd: 'repeated eventpoll_tfd_entry 4' },
  signalfd_entry: { id: 'required uint32 1', flags: 'required uint32 2', fown: 'required fown_entry 3', sigmask: 'required uint64 4' },
  timerfd_entry: {
    id: 'required uint32 1', flags: 'required uint32 2', fown: 'required fown_entry 3', clockid: 'required uint32 4',
    ticks: 'required uint64 5', settime_flags: 'required uint32 6', vsec: 'required uint64 7', vnsec: 'required uint64 8',
    isec: 'required uint64 9', insec: 'required uint64 10',
  },
  sk_opts_entry: {
    so_sndbuf: 'required uint32 1', so_rcvbuf: 'required uint32 2', so_snd_tmo_sec: 'required uint64 3',
    so_snd_tmo_usec: 'required uint64 4', so_rcv_tmo_sec: 'required uint64 5', so_rcv_tmo_usec: 'required uint64 6',
    reuseaddr: 'optional bool 7', so_priority: 'optional uint32 8', so_rcvlowat: 'optional uint32 9', so_mark: 'optional uint32 10',
    so_passcred: 'optional bool 11', so_passsec: 'optional bool 12', so_dontroute: 'optional bool 13', so_no_check: 'optional bool 14',
    so_bound_dev: 'optional string 15', so_reuseport: 'optional bool 17', so_broadcast: 'optional bool 18',
    so_keepalive: 'optional bool 19', tcp_keepcnt: 'optional uint32 20', tcp_keepidle: 'optional uint32 21',
    tcp_keepintvl: 'optional uint32 22', so_oobinline: 'optional uint32 23', so_linger: 'optional uint32 24',
    so_filter: 'repeated fixed64 16', so_buf_lock: 'optional uint32 25',
  },
  inet_sk_entry: {
    id: 'required uint32 1', ino: 'required uint32 2', family: 'required uint32 3', type: 'required uint32 4',
    proto: 'required uint32 5', state: 'required uint32 6', src_port: 'required uint32 7', dst_port: 'required uint32 8',
    flags: 'required uint32 9', backlog: 'required uint32 10', src_addr: 'repeated uint32 11', dst_addr: 'repeated uint32 12',
    fown: 'required fown_entry 13', opts: 'required sk_opts_entry 14', v6only: 'optional bool 15',
    ip_opts: 'optional ip_opts_entry 16', shutdown: 'optional sk_shutdown 19', tcp_opts: 'optional tcp_opts_entry 20',
    udplite_send_cscov: 'optional uint32 100', udplite_recv_cscov: 'optional uint32 101',
  },
  ip_opts_entry: { freebind: 'optional bool 1', raw: 'optional ip_opts_raw_entry 4', pktinfo: 'optional bool 5', tos: 'optional uint32 6', ttl: 'optional uint32 7' },
  ip_opts_raw_entry: { hdrincl: 'optional bool 1', nodefrag: 'optional bool 2', checksum: 'optional bool 3', icmpv_filter: 'repeated uint32 4' },
  packet_mclist: { index: 'required uint32 1', type: 'required uint32 2', addr: 'required bytes 3' },
  packet_ring: {
    block_size: 'required uint32 1', block_nr: 'required uint32 2', frame_size: 'required uint32 3', frame_nr: 'required uint32 4',
    retire_tmo: 'required uint32 5', sizeof_priv: 'required uint32 6', features: 'required uint32 7',
  },
  packet_sock_entry: {
    id: 'required uint32 1', type: 'required uint32 2', protocol: 'required uint32 3', flags: 'required uint32 4',
    ifindex: 'required uint32 5', fown: 'required fown_entry 6', opts: 'required sk_opts_entry 7', version: 'required uint32 8',
    reserve: 'required uint32 9', aux_data: 'required bool 10', orig_dev: 'required bool 11', vnet_hdr: 'required bool 12',
    loss: 'required bool 13', timestamp: 'required uint32 14', copy_thresh: 'required uint32 15', mclist: 'repeated packet_mclist 16',
    // Absent: no fanout (CRIU's default 0xffffffff).
    fanout: 'optional uint32 17', rx_ring: 'optional packet_ring 18', tx_ring: 'optional packet_ring 19', ns_id: 'optional uint32 20',
  },
  netlink_sk_entry: {
    id: 'required uint32 1', ino: 'required uint32 2', protocol: 'required uint32 3', state: 'required uint32 4',
    flags: 'required uint32 6', portid: 'required uint32 7', groups: 'repeated uint32 8', dst_portid: 'required uint32 9',
    dst_group: 'required uint32 10', fown: 'required fown_entry 11', opts: 'required sk_opts_entry 12', ns_id: 'optional uint32 13',
    nl_flags: 'repeated uint32 100', nl_type: 'optional uint32 101',
  },
  tcp_opts_entry: {
    cork: 'optional bool 1', nodelay: 'optional bool 2', keepcnt: 'optional uint32 3', keepidle: 'optional uint32 4',
    keepintvl: 'optional uint32 5',
  },
  unix_sk_entry: {
    id: 'required uint32 1', ino: 'required uint32 2', type: 'required uint32 3', state: 'required uint32 4',
    flags: 'required uint32 5', uflags: 'required uint32 6', backlog: 'required uint32 7', peer: 'required uint32 8',
    fown: 'required fown_entry 9', opts: 'required sk_opts_entry 10', name: 'required bytes 11', shutdown: 'optional sk_shutdown 12',
    file_perms: 'optional file_perms_entry 13', deleted: 'optional bool 15', embryo_of: 'optional uint32 100',
  },
  file_perms_entry: { mode: 'required uint32 1', uid: 'required uint32 2', gid: 'required uint32 3' },
  tcp_stream_entry: {
    inq_len: 'required uint32 1', inq_seq: 'required uint32 2', outq_len: 'required uint32 3', outq_seq: 'required uint32 4',
    opt_mask: 'required uint32 5', snd_wscale: 'required uint32 6', mss_clamp: 'required uint32 7', rcv_wscale: 'optional uint32 8',
    timestamp: 'optional uint32 9', cork: 'optional bool 10', nodelay: 'optional bool 11', unsq_len: 'optional uint32 12',
    snd_wl1: 'optional uint32 13', snd_wnd: 'optional uint32 14', max_window: 'optional uint32 15', rcv_wnd: 'optional uint32 16',
    rcv_wup: 'optional uint32 17',
  },
  ghost_file_entry: {
    uid: 'required uint32 1', gid: 'required uint32 2', mode: 'required uint32 3', dev: 'optional uint32 4',
    ino: 'optional uint64 5', rdev: 'optional uint32 6', atim: 'optional timeval 7', mtim: 'optional timeval 8', chunks: 'optional bool 9', size: 'optional uint64 10',
    symlnk_target: 'optional string 11',
  },
  ghost_chunk_entry: { len: 'required uint64 1', off: 'required uint64 2' },
  remap_file_path_entry: { orig_id: 'required uint32 1', remap_id: 'required uint32 2', remap_type: 'optional remap_type 3' },
  sk_packet_entry: { id_for: 'required uint32 1', length: 'required uint32 2', addr: 'optional bytes 3', scm: 'repeated scm_entry 4' },
  scm_entry: { type: 'required uint32 1', rights: 'repeated uint32 2' },
  fown_entry: {
    uid: 'required uint32 1', euid: 'required uint32 2', signum: 'required uint32 3', pid_type: 'required uint32 4',
    pid: 'required uint32 5',
  },
  reg_file_entry: {
    id: 'required uint32 1', flags: 'required uint32 2', pos: 'required uint64 3', fown: 'required fown_entry 5',
    name: 'required string 6', mnt_id: 'optional sint32 7', size: 'optional uint64 8', ext: 'optional bool 9',
    mode: 'optional uint32 10', build_id: 'repeated uint32 11',
  },
  utsns_entry: { nodename: 'required string 1', domainname: 'required string 2' },
  timespec: { tv_sec: 'required uint64 1', tv_nsec: 'required uint64 2' },
  timeval: { tv_sec: 'required uint64 1', tv_usec: 'required uint64 2' },
  timens_entry: { monotonic: 'required timespec 1', boottime: 'required timespec 2' },
  ipc_var_entry: {
    sem_ctls: 'repeated uint32 1', msg_ctlmax: 'required uint32 2', msg_ctlmnb: 'required uint32 3', msg_ctlmni: 'required uint32 4',
    auto_msgmni: 'required uint32 5', shm_ctlmax: 'required uint64 6', shm_ctlall: 'required uint64 7', shm_ctlmni: 'required uint32 8',
    shm_rmid_forced: 'required uint32 9', mq_queues_max: 'required uint32 10', mq_msg_max: 'required uint32 11',
    mq_msgsize_max: 'required uint32 12', mq_msg_default: 'optional uint32 13', mq_msgsize_default: 'optional uint32 14',
    msg_next_id: 'optional uint32 15', sem_next_id: 'optional uint32 16', shm_next_id: 'optional uint32 17',
  },
  ipc_desc_entry: {
    key: 'required uint32 1', uid: 'required uint32 2', gid: 'required uint32 3', cuid: 'required uint32 4', cgid: 'required uint32 5',
    mode: 'required uint32 6', id: 'required uint32 7',
  },
  ipc_shm_entry: { desc: 'required ipc_desc_entry 1', size: 'required uint64 2', in_pagemaps: 'optional bool 3', hugetlb_flag: 'optional uint32 4' },
  ipc_msg: { mtype: 'required uint64 1', msize: 'required uint32 2' },
  ipc_msg_entry: { desc: 'required ipc_desc_entry 1', qbytes: 'required uint32 2', qnum: 'required uint32 3' },
  ipc_sem_entry: { desc: 'required ipc_desc_entry 1', nsems: 'required uint32 2' },
  mnt_entry: {
    fstype: 'required uint32 1', mnt_id: 'required uint32 2', root_dev: 'required uint32 3', parent_mnt_id: 'required uint32 4',
    flags: 'required uint32 5', root: 'required string 6', mountpoint: 'required string 7', source: 'required string 8',
    options: 'required string 9', shared_id: 'optional uint32 10', master_id: 'optional uint32 11', with_plugin: 'optional bool 12',
    ext_mount: 'optional bool 13', fsname: 'optional string 14', internal_sharing: 'optional bool 15', deleted: 'optional bool 16',
    sb_flags: 'optional uint32 17', ext_key: 'optional string 18',
  },
  sysctl_entry: { type: 'required SysctlType 1', iarg: 'optional int32 2', sarg: 'optional string 3' },
  net_device_entry: {
    type: 'required nd_type 1', ifindex: 'required uint32 2', mtu: 'required uint32 3', flags: 'required uint32 4', name: 'required string 5',
    address: 'optional bytes 7', conf4: 'repeated sysctl_entry 9', conf6: 'repeated sysctl_entry 10', peer_ifindex: 'optional uint32 12',
    peer_nsid: 'optional uint32 13', master: 'optional uint32 14', ext_peer_name: 'optional string 100', ext_peer_master: 'optional string 101',
  },
  netns_id: { target_ns_id: 'required uint32 1', netnsid_value: 'required int32 2' },
  netns_entry: {
    def_conf4: 'repeated sysctl_entry 3', all_conf4: 'repeated sysctl_entry 4', def_conf6: 'repeated sysctl_entry 5',
    all_conf6: 'repeated sysctl_entry 6', nsids: 'repeated netns_id 7', ext_key: 'optional string 8', unix_conf: 'repeated sysctl_entry 9',
    ipv4_sysctl: 'repeated sysctl_entry 10',
  },
  cgroup_perms: { mode: 'required uint32 1', uid: 'required uint32 2', gid: 'required uint32 3' },
  cgroup_prop_entry: { name: 'required string 1', value: 'required string 2', perms: 'optional cgroup_perms 3' },
  cgroup_dir_entry: {
    dir_name: 'required string 1', children: 'repeated cgroup_dir_entry 2', properties: 'repeated cgroup_prop_entry 3', dir_perms: 'optional cgroup_perms 4',
  },
  cg_controller_entry: { cnames: 'repeated string 1', dirs: 'repeated cgroup_dir_entry 2', is_threaded: 'optional bool 3' },
  cg_member_entry: { name: 'required string 1', path: 'required string 2', cgns_prefix: 'optional uint32 3' },
  cg_set_entry: { id: 'required uint32 1', ctls: 'repeated cg_member_entry 2' },
  cgroup_entry: { sets: 'repeated cg_set_entry 1', controllers: 'repeated cg_controller_entry 2' },
  seccomp_filter: { filter: 'required bytes 1', prev: 'optional uint32 2', flags: 'optional uint32 3' },
  seccomp_entry: { seccomp_filters: 'repeated seccomp_filter 1' },
  file_lock_entry: {
    flag: 'required uint32 1', type: 'required uint32 2', pid: 'required int32 3', fd: 'required int32 4',
    start: 'required int64 5', len: 'required int64 6',
  },
  pipe_data_entry: { pipe_id: 'required uint32 1', bytes: 'required uint32 2', size: 'optional uint32 3' },
  pipe_entry: {
    id: 'required uint32 1', pipe_id: 'required uint32 2', flags: 'required uint32 3', fown: 'required fown_entry 4',
  },
  ...RPC_MESSAGES,
} as const;

const enums = {
  nd_type: { LOOPBACK: 1, VETH: 2, TUN: 3, EXTLINK: 4, VENET: 5, BRIDGE: 6, MACVLAN: 7, SIT: 8 },
  SysctlType: { CTL_STR: 5, CTL_32: 6 },
  fstype: {
    UNSUPPORTED: 0, PROC: 1, SYSFS: 2, DEVTMPFS: 3, BINFMT_MISC: 4, TMPFS: 5, DEVPTS: 6, SIMFS: 7, PSTORE: 8, SECURITYFS: 9,
    FUSECTL: 10, DEBUGFS: 11, CGROUP: 12, AUFS: 13, MQUEUE: 14, FUSE: 15, AUTO: 16, OVERLAYFS: 17, AUTOFS: 18, TRACEFS: 19, CGROUP2: 23,
  },
  lsmtype: { NO_LSM: 0, SELINUX: 1, APPARMOR: 2 },
  remap_type: { LINKED: 0, GHOST: 1, PROCFS: 2 },
  sk_shutdown: { NONE: 0, READ: 1, WRITE: 2, BOTH: 3 },
  march: { UNKNOWN: 0, X86_64: 1, ARM: 2, AARCH64: 3, PPC64: 4, S390: 5, MIPS: 6 },
  TtyType: { UNKNOWN: 0, PTY: 1, CONSOLE: 2, VT: 3, CTTY: 4, EXT_TTY: 5, SERIAL: 6 },
  seccomp_mode: { disabled: 0, strict: 1, filter: 2 },
  user_x86_regs_mode: { NATIVE: 1, COMPAT: 2 },
  fd_types: {
    UND: 0, REG: 1, PIPE: 2, FIFO: 3, INETSK: 4, UNIXSK: 5, EVENTFD: 6, EVENTPOLL: 7, INOTIFY: 8, SIGNALFD: 9,
    PACKETSK: 10, TTY: 11, FANOTIFY: 12, NETLINKSK: 13, NS: 14, TUNF: 15, EXT: 16, TIMERFD: 17, MEMFD: 18,
    BPFMAP: 19, PIDFD: 20, CTL_TTY: 65534, AUTOFS_PIPE: 65535,
  },
  ...RPC_ENUMS,
} as const;

export const SCHEMA = { messages, enums } as const;

/**
 * Fields that are ours, not CRIU's, in numbers CRIU does not use (crit and
 * CRIU skip them as unknown fields); a test checks they collide with nothing.
 */
export const EXTENSIONS: Readonly<Record<string, string>> = {
  'sk_packet_entry.addr': 'reserved upstream "for message address": the source address of a queued datagram',
  'unix_sk_entry.embryo_of': 'a connection still in a listener\'s accept queue (its server end, no fd yet): the listener\'s inode; such entries are in accept-queue order',
  'net_device_entry.ext_peer_name': 'the name of a veth\'s other end in the dumper\'s namespace (criu needs --external veth[] instead)',
  'net_device_entry.ext_peer_master': 'the bridge that other end was attached to',
  'thread_core_entry.cpu_affinity': 'a thread\'s CPU affinity (sched_getaffinity), the mask\'s 64-bit words: CRIU does not carry it (100+: far above CRIU 4.2\'s 16)',
  'thread_core_entry.timer_slack_ns': 'a thread\'s timer slack (PR_GET_TIMERSLACK): CRIU does not carry it',
  'thread_core_entry.ioprio': 'a thread\'s I/O priority (ioprio_get, class/hint/level): CRIU does not carry it',
  'inet_sk_entry.udplite_send_cscov': 'a UDP-Lite socket\'s checksum coverage of what it sends (UDPLITE_SEND_CSCOV): CRIU does not carry it',
  'inet_sk_entry.udplite_recv_cscov': 'the coverage a UDP-Lite socket asks of what it receives (UDPLITE_RECV_CSCOV): CRIU does not carry it',
  'netlink_sk_entry.nl_flags': 'the SOL_NETLINK options set on the socket (NETLINK_PKTINFO, NETLINK_NO_ENOBUFS, NETLINK_EXT_ACK...), by option number: CRIU does not carry them',
  'netlink_sk_entry.nl_type': 'SOCK_DGRAM for a netlink socket opened so (absent: SOCK_RAW, all criu makes)',
  'inventory_entry.dump_criu_run_id': 'CRIU 4.x\'s own field 13 (images/inventory.proto), newer than Debian\'s pycriu: the id of the dump\'s network lock',
};

/**
 * CRIU fields newer than the pycriu the tests compare with (Debian's 3.17),
 * as CRIU 4.2's images/*.proto declares them (a whole message when all its
 * fields are here: tcp_opts_entry); the schema test checks our declaration
 * against these and that pycriu has no other field there.
 */
export const NEWER_UPSTREAM: Readonly<Record<string, string>> = {
  'creds_entry.no_new_privs': 'optional uint32 18',
  'file_entry.pidfd': 'optional pidfd_entry 22',
  'pidfd_entry.id': 'required uint32 1',
  'pidfd_entry.ino': 'required uint32 2',
  'pidfd_entry.flags': 'required uint32 3',
  'pidfd_entry.nspid': 'required int32 4',
  'pidfd_entry.fown': 'required fown_entry 5',
  'creds_entry.cap_amb': 'repeated uint32 19',
  'task_core_entry.membarrier_registration_mask': 'optional uint32 22',
  'netns_entry.ipv4_sysctl': 'repeated sysctl_entry 10',
  'thread_core_entry.cg_set': 'optional uint32 16',
  'cg_controller_entry.is_threaded': 'optional bool 3',
  'memfd_inode_entry.mode': 'optional uint32 9',
  'task_core_entry.stop_signo': 'optional uint32 21',
  'inet_sk_entry.tcp_opts': 'optional tcp_opts_entry 20',
  'tcp_opts_entry.cork': 'optional bool 1',
  'tcp_opts_entry.nodelay': 'optional bool 2',
  'tcp_opts_entry.keepcnt': 'optional uint32 3',
  'tcp_opts_entry.keepidle': 'optional uint32 4',
  'tcp_opts_entry.keepintvl': 'optional uint32 5',
  'ip_opts_entry.pktinfo': 'optional bool 5',
  'ip_opts_entry.tos': 'optional uint32 6',
  'ip_opts_entry.ttl': 'optional uint32 7',
  // CRIU 4.2 names it nr_pages (and field 2 compat_nr_pages; Debian's pycriu: field 2 nr_pages).
  'pagemap_entry.nr_pages64': 'optional uint64 5',
};

export type MsgName = keyof typeof messages;
export type EnumName = keyof typeof enums;

interface ScalarTypes {
  double: number; float: number; int32: number; uint32: number; sint32: number; fixed32: number; sfixed32: number;
  int64: bigint; uint64: bigint; sint64: bigint; fixed64: bigint; sfixed64: bigint;
  bool: boolean; string: string; bytes: Buffer;
}

type Spec<N extends MsgName> = (typeof messages)[N];
type LabelOf<S> = S extends `${infer L} ${string} ${string}` ? L : never;
type TypeOf<S> = S extends `${string} ${infer T} ${string}` ? T : never;
type TsOf<T> = T extends keyof ScalarTypes ? ScalarTypes[T] : T extends MsgName ? Msg<T> : T extends EnumName ? number : never;
type Keys<N extends MsgName, L extends string> = { [K in keyof Spec<N>]: LabelOf<Spec<N>[K]> extends L ? K : never }[keyof Spec<N>];
type Simplify<T> = { [K in keyof T]: T[K] } & {};

/**
 * A message as a plain object: required fields required, optional fields
 * optional, repeated fields optional arrays (always present, maybe empty,
 * when decoded).
 */
export type Msg<N extends MsgName> = Simplify<
  { -readonly [K in Keys<N, 'required'>]: TsOf<TypeOf<Spec<N>[K]>> } &
  { -readonly [K in Keys<N, 'optional'>]?: TsOf<TypeOf<Spec<N>[K]>> } &
  { -readonly [K in Keys<N, 'repeated'>]?: TsOf<TypeOf<Spec<N>[K]>>[] }
>;

/** The values of a CRIU enum, by name. */
export function enumValues<E extends EnumName>(name: E): (typeof enums)[E] {
  return enums[name];
}
