// criu swrk's pure parts and its transport in one process: which criu_opts
// are taken, accepted or refused (runc's and podman's real requests among
// them), criu's cgroup modes, and a notification carrying an fd over
// SCM_RIGHTS (orphan-pts-master's way).
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { POLICY, screen, isSet, cgroupMode, dumpOptions, type CriuOpts } from '../../src/swrk/options';
import { RpcChannel } from '../../src/swrk/channel';
import { notifier } from '../../src/swrk/server';
import { describeMessage, encode, decode } from '../../src/images/codec';
import { enumValues, SCHEMA } from '../../src/images/schema';
import { socketpair, sendPacket, recvPacket, abi } from '../../src/sys';
import { StasisError } from '../../src/errors';

const T = enumValues('criu_req_type');
const NET = 0x40000000;

/** runc 1.1.5's `runc checkpoint` and `runc restore` requests as traced (swrk.md, opts-summary.txt). */
const RUNC_DUMP: CriuOpts = {
  images_dir_fd: 7, pid: 9496, leave_running: false, ext_unix_sk: false, tcp_established: false, shell_job: false, file_locks: false,
  log_level: 4, log_file: 'dump.log', notify_scripts: true, root: '/var/tmp/swrk-lab/rc/rootfs', auto_dedup: false, work_dir_fd: 8,
  ext_mnt: [{ key: '/data', val: '/data' }, { key: '/proc/keys', val: '/dev/null' }], manage_cgroups: true, empty_ns: NET,
  freeze_cgroup: '/sys/fs/cgroup/freezer/bb1', lazy_pages: false, orphan_pts_master: true, config_file: '/nonexistent/criu/runc.conf',
};
const RUNC_RESTORE: CriuOpts = {
  images_dir_fd: 7, ext_unix_sk: false, tcp_established: false, evasive_devices: true, shell_job: false, file_locks: false, log_level: 4,
  log_file: 'restore.log', notify_scripts: true, root: '/run/runc/bb1/criu-root', auto_dedup: false, work_dir_fd: 8,
  ext_mnt: [{ key: '/data', val: '/var/tmp/swrk-lab/hostdir' }], manage_cgroups: true, cg_root: [{ ctrl: 'pids', path: '/bb1' }],
  rst_sibling: true, inherit_fd: [{ key: 'pipe:[214710]', fd: 0 }], empty_ns: NET, lazy_pages: false, orphan_pts_master: true,
  config_file: '/nonexistent/criu/runc.conf',
};

test('runc\'s own dump and restore requests pass the screen, each acceptance said', () => {
  const d = screen(RUNC_DUMP, 'dump');
  assert.ok(d.some((n) => /^criu option freeze_cgroup accepted: the tree is frozen by ptrace/.test(n)), d.join('\n'));
  assert.ok(d.some((n) => /^criu option empty_ns \(network\) accepted/.test(n)));
  const r = screen(RUNC_RESTORE, 'restore');
  assert.ok(r.some((n) => /^criu option rst_sibling accepted: the restored root is our child/.test(n)), r.join('\n'));
  // Explicit falses (Go sends every field it knows) say nothing.
  assert.ok(!d.some((n) => /leave_running|lazy_pages|auto_dedup/.test(n)));
});

test('external: podman\'s network namespace is taken at dump; an external pid namespace, or a network namespace at restore, refused by name', () => {
  const podman = { ...RUNC_DUMP, external: ['net[4026532468]:extRootNetNS'] };
  assert.doesNotThrow(() => screen(podman, 'dump'));
  assert.deepEqual(dumpOptions(podman, { imagesDir: '/i', workDir: '/w' }).external, ['mnt[/data]:/data', 'mnt[/proc/keys]:/dev/null', 'net[4026532468]:extRootNetNS']);
  assert.throws(() => screen({ ...RUNC_DUMP, external: ['pid[4026532470]:extRootPidNS'] }, 'dump'),
    (e: StasisError) => e.code === 'STASIS_UNSUPPORTED' && /^criu option external: pid\[4026532470\]:extRootPidNS: external resources other than mounts and \(at dump\) network namespaces are not supported/.test(e.message));
  assert.throws(() => screen({ ...RUNC_RESTORE, external: ['net[4026532468]:extRootNetNS'] }, 'restore'), /^StasisError: criu option external: net\[4026532468\]/);
});

/** A value that means something for a field of criu_opts, by its declared type. */
function someValue(type: string, label: string): unknown {
  const one = (() => {
    switch (type) {
      case 'bool': return true;
      case 'string': return 'x';
      case 'int32': case 'uint32': return 5;
      case 'criu_page_server_info': return { port: 1 };
      case 'criu_veth_pair': return { if_in: 'a', if_out: 'b' };
      case 'ext_mount_map': return { key: 'k', val: 'v' };
      case 'join_namespace': return { ns: 'net', ns_file: '/f' };
      case 'inherit_fd': return { key: 'k', fd: 0 };
      case 'cgroup_root': return { path: '/p' };
      case 'unix_sk': return { inode: 1 };
      default: if (type in SCHEMA.enums) return 2; throw new Error(`no sample for ${type}`);
    }
  })();
  return label === 'repeated' ? [one] : one;
}

test('every field refused for an operation is refused by name when set, and only then', () => {
  const fields = describeMessage('criu_opts');
  assert.deepEqual(fields.map((f) => f.name).sort(), Object.keys(POLICY).sort(), 'a rule for every field of criu_opts');
  let refusals = 0;
  for (const kind of ['dump', 'restore'] as const) {
    for (const f of fields) {
      const rule = POLICY[f.name as keyof CriuOpts][kind];
      if (typeof rule !== 'object' || !('refuse' in rule)) continue;
      const o = { images_dir_fd: 3, [f.name]: someValue(f.type, f.label) } as CriuOpts;
      assert.throws(() => screen(o, kind), (e: Error) => e.message.startsWith(`criu option ${f.name}: `), `${kind} ${f.name}`);
      const off = { images_dir_fd: 3, [f.name]: f.label === 'repeated' ? [] : f.type === 'bool' ? false : undefined } as CriuOpts;
      assert.doesNotThrow(() => screen(off, kind), `${kind} ${f.name} unset`);
      refusals++;
    }
  }
  assert.ok(refusals > 50, `${refusals} refusals checked`);
});

test('isSet: falses, empties and criu\'s defaults mean nothing', () => {
  const o: CriuOpts = { images_dir_fd: -1, log_level: 2, ghost_limit: 0x100000, cpu_cap: 0xffffffff, network_lock: 1, lazy_pages: false, skip_mnt: [], root: '', status_fd: 0 };
  for (const f of ['images_dir_fd', 'log_level', 'ghost_limit', 'cpu_cap', 'network_lock', 'lazy_pages', 'skip_mnt', 'root', 'status_fd', 'pid'] as const) assert.equal(isSet(o, f), false, f);
  assert.equal(isSet({ images_dir_fd: 7 }, 'images_dir_fd'), true);
  assert.equal(isSet({ images_dir_fd: 7, network_lock: 2 }, 'network_lock'), true);
  assert.equal(isSet({ images_dir_fd: 7, log_level: 0 }, 'log_level'), true);
});

test('cgroup modes: criu\'s enum, and the older boolean', () => {
  const CG = enumValues('criu_cg_mode');
  const mode = (o: Partial<CriuOpts>) => cgroupMode({ images_dir_fd: 3, ...o });
  assert.equal(mode({}), undefined);
  assert.equal(mode({ manage_cgroups: true }), 'soft');
  assert.equal(mode({ manage_cgroups: false }), 'ignore');
  assert.equal(mode({ manage_cgroups: true, manage_cgroups_mode: CG.STRICT }), 'strict');
  assert.equal(mode({ manage_cgroups_mode: CG.DEFAULT }), 'soft');
  assert.equal(mode({ manage_cgroups_mode: CG.CG_NONE }), 'none');
  assert.equal(mode({ manage_cgroups_mode: CG.IGNORE }), 'ignore');
  assert.throws(() => mode({ manage_cgroups_mode: 9 }), /criu option manage_cgroups_mode: unknown mode 9/);
});

test('a notification carries an fd (SCM_RIGHTS) and waits for its answer', () => {
  const [server, client] = socketpair(abi.SOCK.SEQPACKET);
  const [r, w] = socketpair(abi.SOCK.STREAM);
  try {
    const ch = new RpcChannel(server);
    assert.equal(ch.peer, process.pid);
    // The answer is queued first: one thread plays both sides.
    sendPacket(client, encode('criu_req', { type: T.NOTIFY, notify_success: true }));
    notifier(ch, true)('orphan-pts-master', undefined, w);
    const p = recvPacket(client, 8192);
    assert.ok(typeof p !== 'number');
    assert.deepEqual(decode('criu_resp', p.data), { type: T.NOTIFY, success: true, notify: { script: 'orphan-pts-master' } });
    assert.equal(p.fds.length, 1);
    const got = fs.fstatSync(p.fds[0]), want = fs.fstatSync(w);
    assert.equal(got.ino, want.ino, 'the same open file');
    fs.writeSync(p.fds[0], 'x');
    fs.closeSync(p.fds[0]);
    const b = Buffer.alloc(1);
    assert.equal(fs.readSync(r, b), 1);
    assert.equal(b.toString(), 'x', 'written through the fd received');
    // A refusal ends the conversation with the point named.
    sendPacket(client, encode('criu_req', { type: T.NOTIFY, notify_success: false }));
    assert.throws(() => notifier(ch, true)('post-dump'), (e: StasisError) => e.code === 'STASIS_RPC' && e.message === 'the client reported a failure at notification post-dump');
    const sent = recvPacket(client, 8192);
    assert.ok(typeof sent !== 'number');
    assert.equal(decode('criu_resp', sent.data).notify?.script, 'post-dump');
    // Disabled (notify_scripts false): nothing sent, nothing awaited.
    notifier(ch, false)('pre-dump');
    const none = recvPacket(client, 8192, { dontWait: true });
    assert.equal(typeof none === 'number' ? none : 'a packet', -abi.ERRNO.EAGAIN);
  } finally {
    for (const fd of [server, client, r, w]) fs.closeSync(fd);
  }
});

test('the server refuses an fd that is not a SOCK_SEQPACKET socket', () => {
  const [a, b] = socketpair(abi.SOCK.STREAM);
  const f = fs.openSync('/dev/null', 'r');
  try {
    assert.throws(() => new RpcChannel(a), /swrk: fd \d+ is not a SOCK_SEQPACKET socket \(type 1\)/);
    assert.throws(() => new RpcChannel(f), /swrk: fd \d+ is not a socket \(ENOTSOCK\)/);
  } finally {
    for (const fd of [a, b, f]) fs.closeSync(fd);
  }
});
