// CRIU's RPC messages (images/rpc.proto): what runc, podman, CRI-O and
// containerd send to `criu swrk FD` and read back, in the notation of
// schema.ts ("label type number"; CRIU's names and numbers). Merged into the
// schema there, so Msg<'criu_req'> is a type and the codec reads and writes
// them; test/schema-upstream.test.ts compares them with pycriu's rpc_pb2.
// Defaults ([default = ...] in the .proto) are applied by the reader
// (src/swrk/options.ts): the codec leaves an absent field undefined.

export const RPC_MESSAGES = {
  criu_page_server_info: { address: 'optional string 1', port: 'optional int32 2', pid: 'optional int32 3', fd: 'optional int32 4' },
  criu_veth_pair: { if_in: 'required string 1', if_out: 'required string 2' },
  ext_mount_map: { key: 'required string 1', val: 'required string 2' },
  join_namespace: { ns: 'required string 1', ns_file: 'required string 2', extra_opt: 'optional string 3' },
  inherit_fd: { key: 'required string 1', fd: 'required int32 2' },
  cgroup_root: { ctrl: 'optional string 1', path: 'required string 2' },
  unix_sk: { inode: 'required uint32 1' },
  criu_opts: {
    images_dir_fd: 'required int32 1', pid: 'optional int32 2', leave_running: 'optional bool 3', ext_unix_sk: 'optional bool 4',
    tcp_established: 'optional bool 5', evasive_devices: 'optional bool 6', shell_job: 'optional bool 7', file_locks: 'optional bool 8',
    log_level: 'optional int32 9', log_file: 'optional string 10', ps: 'optional criu_page_server_info 11',
    notify_scripts: 'optional bool 12', root: 'optional string 13', parent_img: 'optional string 14', track_mem: 'optional bool 15',
    auto_dedup: 'optional bool 16', work_dir_fd: 'optional int32 17', link_remap: 'optional bool 18',
    veths: 'repeated criu_veth_pair 19', cpu_cap: 'optional uint32 20', force_irmap: 'optional bool 21', exec_cmd: 'repeated string 22',
    ext_mnt: 'repeated ext_mount_map 23', manage_cgroups: 'optional bool 24', cg_root: 'repeated cgroup_root 25',
    rst_sibling: 'optional bool 26', inherit_fd: 'repeated inherit_fd 27', auto_ext_mnt: 'optional bool 28',
    ext_sharing: 'optional bool 29', ext_masters: 'optional bool 30', skip_mnt: 'repeated string 31', enable_fs: 'repeated string 32',
    unix_sk_ino: 'repeated unix_sk 33', manage_cgroups_mode: 'optional criu_cg_mode 34', ghost_limit: 'optional uint32 35',
    irmap_scan_paths: 'repeated string 36', external: 'repeated string 37', empty_ns: 'optional uint32 38',
    join_ns: 'repeated join_namespace 39', cgroup_props: 'optional string 41', cgroup_props_file: 'optional string 42',
    cgroup_dump_controller: 'repeated string 43', freeze_cgroup: 'optional string 44', timeout: 'optional uint32 45',
    tcp_skip_in_flight: 'optional bool 46', weak_sysctls: 'optional bool 47', lazy_pages: 'optional bool 48',
    status_fd: 'optional int32 49', orphan_pts_master: 'optional bool 50', config_file: 'optional string 51',
    tcp_close: 'optional bool 52', lsm_profile: 'optional string 53', tls_cacert: 'optional string 54', tls_cacrl: 'optional string 55',
    tls_cert: 'optional string 56', tls_key: 'optional string 57', tls: 'optional bool 58', tls_no_cn_verify: 'optional bool 59',
    cgroup_yard: 'optional string 60', pre_dump_mode: 'optional criu_pre_dump_mode 61', pidfd_store_sk: 'optional int32 62',
    lsm_mount_context: 'optional string 63', network_lock: 'optional criu_network_lock_method 64', mntns_compat_mode: 'optional bool 65',
    // In CRIU 4.2, not in Debian's pycriu 3.17: see RPC_NEWER_THAN_PYCRIU.
    skip_file_rwx_check: 'optional bool 66', unprivileged: 'optional bool 67', images_dir: 'optional string 68',
    leave_stopped: 'optional bool 69', display_stats: 'optional bool 70', log_to_stderr: 'optional bool 71',
  },
  criu_dump_resp: { restored: 'optional bool 1' },
  criu_restore_resp: { pid: 'required int32 1' },
  criu_notify: { script: 'optional string 1', pid: 'optional int32 2' },
  criu_features: { mem_track: 'optional bool 1', lazy_pages: 'optional bool 2', pidfd_store: 'optional bool 3' },
  criu_req: {
    type: 'required criu_req_type 1', opts: 'optional criu_opts 2', notify_success: 'optional bool 3', keep_open: 'optional bool 4',
    features: 'optional criu_features 5', pid: 'optional uint32 6',
  },
  criu_resp: {
    type: 'required criu_req_type 1', success: 'required bool 2', dump: 'optional criu_dump_resp 3', restore: 'optional criu_restore_resp 4',
    notify: 'optional criu_notify 5', ps: 'optional criu_page_server_info 6', cr_errno: 'optional int32 7',
    features: 'optional criu_features 8', cr_errmsg: 'optional string 9', version: 'optional criu_version 10', status: 'optional int32 11',
  },
  // stats.proto: criu's stats-dump / stats-restore in the work directory (podman --print-stats reads them).
  dump_stats_entry: {
    freezing_time: 'required uint32 1', frozen_time: 'required uint32 2', memdump_time: 'required uint32 3', memwrite_time: 'required uint32 4',
    pages_scanned: 'required uint64 5', pages_skipped_parent: 'required uint64 6', pages_written: 'required uint64 7',
    irmap_resolve: 'optional uint32 8', pages_lazy: 'required uint64 9', page_pipes: 'optional uint64 10', page_pipe_bufs: 'optional uint64 11',
    shpages_scanned: 'optional uint64 12', shpages_skipped_parent: 'optional uint64 13', shpages_written: 'optional uint64 14',
  },
  restore_stats_entry: {
    pages_compared: 'required uint64 1', pages_skipped_cow: 'required uint64 2', forking_time: 'required uint32 3', restore_time: 'required uint32 4',
    pages_restored: 'optional uint64 5',
  },
  stats_entry: { dump: 'optional dump_stats_entry 1', restore: 'optional restore_stats_entry 2' },
  criu_version: {
    major_number: 'required int32 1', minor_number: 'required int32 2', gitid: 'optional string 3', sublevel: 'optional int32 4',
    extra: 'optional int32 5', name: 'optional string 6',
  },
} as const;

export const RPC_ENUMS = {
  criu_req_type: {
    EMPTY: 0, DUMP: 1, RESTORE: 2, CHECK: 3, PRE_DUMP: 4, PAGE_SERVER: 5, NOTIFY: 6, CPUINFO_DUMP: 7, CPUINFO_CHECK: 8,
    FEATURE_CHECK: 9, VERSION: 10, WAIT_PID: 11, PAGE_SERVER_CHLD: 12, SINGLE_PRE_DUMP: 13,
  },
  criu_cg_mode: { IGNORE: 0, CG_NONE: 1, PROPS: 2, SOFT: 3, FULL: 4, STRICT: 5, DEFAULT: 6 },
  criu_network_lock_method: { IPTABLES: 1, NFTABLES: 2, SKIP: 3 },
  criu_pre_dump_mode: { SPLICE: 1, VM_READ: 2 },
} as const;

/**
 * Fields of CRIU 4.x's rpc.proto that Debian's pycriu (3.17, the reference
 * the schema test reads) does not have yet: declared so that a caller
 * setting one is answered (refused where it changes the result), never
 * skipped as unknown. The test checks pycriu has none of these numbers and
 * each is declared as in CRIU 4.2.
 */
export const RPC_NEWER_THAN_PYCRIU: Readonly<Record<string, string>> = {
  'criu_opts.skip_file_rwx_check': 'optional bool 66',
  'criu_opts.unprivileged': 'optional bool 67',
  'criu_opts.images_dir': 'optional string 68',
  'criu_opts.leave_stopped': 'optional bool 69',
  'criu_opts.display_stats': 'optional bool 70',
  'criu_opts.log_to_stderr': 'optional bool 71',
};
