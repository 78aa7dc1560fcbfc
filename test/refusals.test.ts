// Everything stasis does not carry is refused at dump with one clear line,
// and the process runs on untouched: never dumped wrongly, never dropped.
// One entry per kind of state (README: "What is refused"); other tests cover
// the rest of the list (zombies, tracees, established TCP without
// --tcp-established, unix peers
// outside the tree, shell-job terminals without -j, deleted files over the
// ghost limit).
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Fixture, initHarness, runStasis, describeCli, tmpDir, waitFor, tracerPid, procState, reapZombies } from './harness';

let root: string;
before(() => { initHarness(); root = tmpDir('refuse'); });
after(() => fs.rmSync(root, { recursive: true, force: true }));

const CASES: [kind: string, message: RegExp][] = [
  ['ns-user', /lives in its own user namespace \d+; user namespaces are not supported yet/],
  // Unshared, not yet entered: the next child would land elsewhere.
  ['ns-pid', /has unshared a pid namespace its children would enter \(pid \(for its children\) namespace \d+\); not supported/],
  ['ns-time', /has unshared a time namespace its children would enter \(time \(for its children\) namespace \d+\); not supported/],
  ['fanotify', /anon_inode:\[fanotify\] is not supported yet/],
  ['sysv-shm', /System V shared memory is not supported yet/],
  ['mqueue-fd', /^stasis: fd 3 of pid \d+: \/stasis-refuse \(deleted\) is a POSIX message queue; not supported$/],
  ['mqueue-ns', /^stasis: pid \d+'s IPC namespace holds POSIX message queues \(stasis-refuse\); not supported$/],
  ['userfaultfd', /anon_inode:\[userfaultfd\] is not supported yet/],
  ['io_uring', /anon_inode:\[io_uring\] is not supported yet/],
  // A pty is carried when its master is in the tree; a slave alone is a shell job's terminal.
  ['pty-master-outside', /^stasis: fd \d+ of pid \d+ is the terminal \/dev\/pts\/\d+; dump a shell job with -j\/--shell-job$/],
  ['deleted-mapping', /^stasis: the mapping [0-9a-f]+-[0-9a-f]+ of pid \d+: deleted file \/.*\/mapped \(deleted\) holds 2097152 bytes, over the ghost limit of 1048576 \(--ghost-limit\)$/],
  ['tcp-close-wait', /^stasis: fd \d+ of pid \d+: TCP connection \(port \d+ ↔ \d+\) in state CLOSE_WAIT: the peer's FIN was received; rebuilding that needs a forged FIN from the peer; not supported$/],
  // An ended connection comes back closed and shut both ways: nothing left to read in it.
  ['tcp-ended-data', /^stasis: fd \d+ of pid \d+: TCP connection that ended \(port \d+\) still holds 3 byte\(s\) to read; not supported$/],
  ['memfd-hugetlb', /^stasis: \/memfd:huge \(deleted\): a memfd of huge pages \(MFD_HUGETLB\); not supported$/],
  ['deleted-dir-nested', /^stasis: fd \d+ of pid \d+: \/.*\/outer\/inner \(deleted\) was in \/.*\/outer, removed too; not supported$/],
  ['cwd-proc-dead', /^stasis: the cwd of pid \d+: \/proc\/\d+ \(deleted\) is a removed directory of a kernel filesystem \(\/proc of an ended process, a removed cgroup\.\.\.\); not supported$/],
  ['shmem-private', /^stasis: VMA [0-9a-f]+-[0-9a-f]+: private mapping of shared anonymous memory \(a MAP_SHARED\|MAP_ANONYMOUS object mapped again with MAP_PRIVATE\) is not supported yet$/],
  ['deleted-linked', /^stasis: fd 3 of pid \d+: \/.*\/opened \(deleted\) still has 1 hard link\(s\) under other names, none in its directory; not supported$/],
  ['tcp-shut-rd', /^stasis: fd \d+ of pid \d+: TCP connection \(port \d+ ↔ \d+\) shut down in a direction \(shutdown\(\)\); not supported$/],
  ['sched-deadline', /^stasis: thread (\d+) of pid \1 runs under scheduling policy SCHED_DEADLINE; not supported$/],
  // Queued data goes back through a sender of ours, so through the filter; a locked filter cannot be set again.
  ['filter-queued', /^stasis: fd \d+ of pid \d+: unix socket \d+ has a socket filter \(SO_ATTACH_FILTER\) and queued data; not supported$/],
  ['filter-locked', /^stasis: fd \d+ of pid \d+: unix socket \d+ has its socket filter locked \(SO_LOCK_FILTER\); not supported$/],
  ['thp-except-advised', /^stasis: pid \d+ disabled transparent huge pages except where advised \(PR_THP_DISABLE_EXCEPT_ADVISED\); images only carry on\/off: not supported$/],
  // Connections not yet accepted (the fixture accepts them at its end: still there, with their data).
  ['tcp-accept-queue', /^stasis: fd 3 of pid \d+: listening TCP socket \(port \d+\) has 1 connection\(s\) not yet accepted; not supported$/],
  // sock_diag tells the sockets of the namespace that asks: asked in the tree's.
  ['netns-tcp-accept-queue', /^stasis: fd 3 of pid \d+: listening TCP socket \(port \d+\) has 1 connection\(s\) not yet accepted; not supported$/],
  // Processes sharing what only threads share.
  ['share-vm', /^stasis: processes (\d+) and \d+ share their address space \(vfork or clone without CLONE_THREAD\); not supported yet$/],
  ['share-fs', /^stasis: processes (\d+) and \d+ share their cwd\/root \(CLONE_FS\) \(vfork or clone without CLONE_THREAD\); not supported yet$/],
  ['vfork', /^stasis: processes \d+ and \d+ share their address space \(vfork or clone without CLONE_THREAD\); not supported yet$/],
  ['seccomp-notif', /^stasis: thread (\d+) has a seccomp filter that hands syscalls to a user-space listener \(SECCOMP_RET_USER_NOTIF\); not supported$/],
  ['nested-uts', /^stasis: pid \d+ is in another UTS namespace than the root \d+ of the tree \(nested namespaces\); not supported$/],
  ['pidns-not-init', /^stasis: pid \d+ is in a pid namespace of its own but is not its init \(pid 2 there\): dump the init of the namespace$/],
  ['mnt-propagation', /^stasis: pid \d+'s mount \/.*\/shared propagates to or from mounts outside its namespace \(peer group \d+\); not supported$/],
  ['mnt-outside', /^stasis: fd 3 of pid \d+: \/.*\/hidden\/file is on a mount outside the tree's mount namespace \(mount \d+\); not supported$/],
  ['mnt-ramfs', /^stasis: pid \d+'s mount namespace: mount \/.*\/ramfs \(device \d+:\d+, \/\) is neither mounted here nor a filesystem that can be made anew$/],
  ['netns-bridge', /^stasis: pid \d+'s network namespace has link stasis-br0 of kind bridge; only loopback and veth are supported$/],
  ['veth-elsewhere', /^stasis: pid \d+'s veth stasis-v0 has its other end in a network namespace other than ours; not supported$/],
];

/** Every process below pid (its threads' children), depth first; one gone meanwhile has none. */
function descendants(pid: number): number[] {
  const out: number[] = [];
  const read = (f: string) => { try { return fs.readFileSync(f, 'utf8'); } catch { return ''; } };
  let tids: string[] = [];
  try { tids = fs.readdirSync(`/proc/${pid}/task`); } catch { /* gone */ }
  for (const tid of tids) {
    for (const c of read(`/proc/${pid}/task/${tid}/children`).split(' ').filter(Boolean).map(Number)) {
      out.push(c, ...descendants(c));
    }
  }
  return out;
}

for (const [kind, message] of CASES) {
  test(`refused: ${kind}`, async () => {
    const fx = await Fixture.start('refuse', { args: [kind], extraFds: true });
    try {
      // Some kinds are dumped from another process of the fixture's (TARGET).
      const pid = Number(fx.manifest.values.get('TARGET')?.[0] ?? fx.pid);
      const r = runStasis(['dump', '-t', String(pid), '-D', path.join(root, kind)]);
      assert.equal(r.status, 1, describeCli(r));
      const lines = r.stderr.trim().split('\n');
      assert.equal(lines.length, 1, `one line: ${r.stderr}`);
      assert.match(lines[0], message);
      assert.ok(!fs.existsSync(path.join(root, kind, 'inventory.img')), 'no checkpoint');
      // The whole tree let go, none of it stopped.
      const tree = [pid, ...descendants(pid)];
      await waitFor('untraced', () => tree.every((p) => tracerPid(p) === 0), 2000, 5);
      for (const p of tree) assert.ok(!/^[tTZX]$/.test(procState(p)), `${p} still running`);
      assert.ok(fx.alive, 'still running');
      const { log } = await fx.terminate();
      assert.match(log, /^PASS$/m, `${kind}: the process is whole:\n${log}`);
    } finally {
      await fx.kill();
      reapZombies();
    }
  });
}
