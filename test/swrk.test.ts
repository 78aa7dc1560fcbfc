// bin/criu swrk: the RPC runc, podman, CRI-O and containerd drive criu with,
// served by stasis. A client in the harness plays runc's part (a
// SOCK_SEQPACKET pair, the server end at fd N of `criu swrk N`, the images
// and work directories as fds of the caller). Probes, a dump and a restore
// of a C fixture with every notification answered in criu's order, a dump
// that leaves the tree running, and requests gone wrong: each answered with
// a failure naming the problem, with nothing left running and the target
// untouched.
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import {
  Fixture, initHarness, tmpDir, SwrkClient, REQ, CRIU, openDir, loadDumpedMemory, dumpedBytes, tracerPid, procState, waitGone,
  descendantsOf, reapZombies, type CriuOpts, type CriuResp, type Notification,
} from './harness';
import { encode } from '../src/images/codec';
import { readImage } from '../src/images/image';
import { memTrackProbe } from '../src/check';

let root: string;
const clients: SwrkClient[] = [];
const fixtures: Fixture[] = [];

before(() => {
  initHarness();
  root = tmpDir('swrk');
});

after(async () => {
  for (const c of clients) await c.kill();
  for (const f of fixtures) await f.kill();
  fs.rmSync(root, { recursive: true, force: true });
});

function client(opts: Parameters<typeof SwrkClient.start>[0] = {}): SwrkClient {
  const c = SwrkClient.start(opts);
  clients.push(c);
  return c;
}

async function counter(): Promise<Fixture> {
  const fx = await Fixture.start('counter');
  fixtures.push(fx);
  await fx.waitCounter(50n);
  return fx;
}

/** The server's exit status once it is done; it never writes to stdout. */
async function finished(c: SwrkClient): Promise<number | null> {
  const code = await c.exit();
  c.close();
  assert.equal(c.stdout, '', 'criu swrk writes nothing on stdout');
  return code;
}

/** Nothing of ours runs but the fixtures named (servers gone, no restored leftovers). */
async function nothingLeft(except: number[]): Promise<void> {
  reapZombies(except);
  const left = descendantsOf().filter((p) => !except.includes(p)).filter((p) => { try { return procState(p) !== 'Z'; } catch { return false; } });
  assert.deepEqual(left, [], 'no process left behind');
}

/** What runc 1.1.5 sends for `runc checkpoint` (explicit falses included), with our directories. */
function runcDumpOpts(pid: number, images: number, work: number, more: Partial<CriuOpts> = {}): CriuOpts {
  return {
    images_dir_fd: images, pid, leave_running: false, ext_unix_sk: false, tcp_established: false, shell_job: false, file_locks: false,
    log_level: 4, log_file: 'dump.log', notify_scripts: true, auto_dedup: false, work_dir_fd: work, manage_cgroups: true,
    lazy_pages: false, orphan_pts_master: true, ...more,
  };
}

function runcRestoreOpts(images: number, work: number, more: Partial<CriuOpts> = {}): CriuOpts {
  return {
    images_dir_fd: images, ext_unix_sk: false, tcp_established: false, evasive_devices: true, shell_job: false, file_locks: false,
    log_level: 4, log_file: 'restore.log', notify_scripts: true, auto_dedup: false, work_dir_fd: work, manage_cgroups: true,
    rst_sibling: true, lazy_pages: false, orphan_pts_master: true, ...more,
  };
}

const scripts = (ns: Notification[]) => ns.map((n) => n.script);

function assertFailed(resp: CriuResp | undefined, type: number, re: RegExp): void {
  assert.ok(resp, 'a response');
  assert.equal(resp.type, type, `response type ${resp.type}: ${resp.cr_errmsg}`);
  assert.equal(resp.success, false);
  assert.match(resp.cr_errmsg ?? '', re);
}

test('VERSION, FEATURE_CHECK, CHECK: answered as criu 4.2, one process each (fd 9 as go-criu passes it); keep_open serves more', async () => {
  let c = client({ serverFd: 9 });
  let x = await c.call({ type: REQ.VERSION });
  assert.deepEqual(x.resp, { type: REQ.VERSION, success: true, version: { major_number: 4, minor_number: 2 } });
  assert.equal(await finished(c), 0);

  c = client();
  x = await c.call({ type: REQ.FEATURE_CHECK, features: { mem_track: true, lazy_pages: true, pidfd_store: true } });
  // Every feature answered: memory tracking where the kernel has async userfaultfd write-protect (runc refuses --lazy-pages itself).
  assert.deepEqual(x.resp, { type: REQ.FEATURE_CHECK, success: true, features: { mem_track: memTrackProbe() === true, lazy_pages: false, pidfd_store: false } });
  assert.equal(await finished(c), 0);

  c = client();
  x = await c.call({ type: REQ.CHECK });
  assert.deepEqual(x.resp, { type: REQ.CHECK, success: true });
  assert.equal(await finished(c), 0);

  c = client();
  x = await c.call({ type: REQ.VERSION, keep_open: true });
  assert.equal(x.resp?.version?.major_number, 4);
  x = await c.call({ type: REQ.FEATURE_CHECK, features: {} });
  assert.equal(x.resp?.type, REQ.FEATURE_CHECK);
  c.close();
  assert.equal(await finished(c), 0, 'closing after a kept-open exchange is the end, not an error');
});

test('DUMP then RESTORE of a counter: notifications in criu\'s order, post-restore names the restored root, which counts on', async () => {
  const fx = await counter();
  const images = path.join(root, 'cycle-images'), work = path.join(root, 'cycle-work'), rwork = path.join(root, 'cycle-rwork');
  const [imgFd, workFd, rworkFd] = [openDir(images), openDir(work), openDir(rwork)];
  try {
    let c = client();
    let x = await c.call({ type: REQ.DUMP, opts: runcDumpOpts(fx.pid, imgFd, workFd) }, () => 'ok', (n) => {
      // At network-lock the tree is frozen under the server; at pre-dump not yet.
      if (n.script === 'pre-dump') assert.equal(tracerPid(fx.pid), 0);
      if (n.script === 'network-lock') assert.equal(tracerPid(fx.pid), c.pid, 'seized by the server at network-lock');
      if (n.script === 'post-dump') assert.ok(fs.existsSync(path.join(images, 'inventory.img')), 'images complete at post-dump');
    });
    assert.deepEqual(x.resp, { type: REQ.DUMP, success: true, dump: { restored: false } });
    assert.deepEqual(scripts(x.notifications), ['pre-dump', 'network-lock', 'post-dump']);
    assert.equal(await finished(c), 0);
    assert.equal((await fx.reap()).kind, 'signaled', 'killed by the dump');
    // The log went into the work directory, not among the images.
    assert.match(fs.readFileSync(path.join(work, 'dump.log'), 'utf8'), /DUMP for pid/);
    assert.ok(!fs.existsSync(path.join(images, 'dump.log')));
    const dumped = dumpedBytes(loadDumpedMemory(images, fx.pid), fx.addr('COUNTER'), 8).readBigUInt64LE(0);

    c = client();
    const server = c.pid;
    x = await c.call({ type: REQ.RESTORE, opts: runcRestoreOpts(imgFd, rworkFd) }, () => 'ok', (n) => {
      // Restored but held until pre-resume; running at post-resume.
      if (n.script === 'post-restore') assert.equal(tracerPid(n.pid!), server, 'post-restore: the root exists, held by the server');
      if (n.script === 'post-resume') assert.equal(tracerPid(n.pid ?? fx.pid), 0, 'post-resume: let go');
    });
    assert.deepEqual(scripts(x.notifications), ['pre-restore', 'setup-namespaces', 'post-setup-namespaces', 'post-restore', 'network-unlock', 'pre-resume', 'post-resume']);
    const byScript = new Map(x.notifications.map((n) => [n.script, n.pid]));
    assert.equal(byScript.get('post-restore'), fx.pid, 'runc takes the restored pid from post-restore');
    assert.equal(byScript.get('setup-namespaces'), fx.pid);
    assert.deepEqual(x.resp, { type: REQ.RESTORE, success: true, restore: { pid: fx.pid } });
    assert.equal(await finished(c), 0);
    assert.match(fs.readFileSync(path.join(rwork, 'restore.log'), 'utf8'), /RESTORE for pid/);
    // The server was its parent and is gone: re-parented to us (the subreaper here; runc or conmon there).
    fx.restored();
    assert.equal(Number(fs.readFileSync(`/proc/${fx.pid}/stat`, 'utf8').split(') ')[1].split(' ')[1]), process.pid);
    assert.ok(fx.counter() >= dumped, `counts on from ${dumped}`);
    await fx.assertCounting();
    const { status, log } = await fx.terminate();
    assert.equal(status.kind, 'exited');
    assert.equal(status.code, 0, log);
    assert.match(log, /^PASS$/m);
  } finally {
    for (const fd of [imgFd, workFd, rworkFd]) fs.closeSync(fd);
  }
  await nothingLeft(fixtures.filter((f) => f.alive).map((f) => f.pid));
});

test('leave_running: network-unlock before the tree goes on; after it is killed, those images restore it as it was then', async () => {
  const fx = await counter();
  const images = path.join(root, 'lr-images');
  const imgFd = openDir(images);
  try {
    let c = client();
    let x = await c.call({ type: REQ.DUMP, opts: runcDumpOpts(fx.pid, imgFd, imgFd, { leave_running: true }) }, () => 'ok', (n) => {
      if (n.script === 'network-unlock') assert.equal(tracerPid(fx.pid), c.pid, 'network-unlock while the tree is still held');
    });
    assert.deepEqual(scripts(x.notifications), ['pre-dump', 'network-lock', 'post-dump', 'network-unlock']);
    assert.deepEqual(x.resp, { type: REQ.DUMP, success: true, dump: { restored: false } });
    assert.equal(await finished(c), 0);
    assert.equal(tracerPid(fx.pid), 0);
    await fx.assertCounting();
    const snapshot = dumpedBytes(loadDumpedMemory(images, fx.pid), fx.addr('COUNTER'), 8).readBigUInt64LE(0);
    // Far enough past the snapshot that a restored copy is told apart.
    await fx.waitCounter(snapshot + 1500n, 60000);
    const killedAt = fx.counter();
    process.kill(fx.pid, 'SIGKILL');
    await fx.reap();
    // The fixture went on writing its log; restored, it must find the file as the images hold it (criu checks the size too).
    const size = Number(readImage(images, 'files.img', 'FILES', 'file_entry').find((f) => f.reg?.name === fx.logPath)!.reg!.size);
    fs.truncateSync(fx.logPath, size);

    c = client();
    let atResume = -1n;
    x = await c.call({ type: REQ.RESTORE, opts: runcRestoreOpts(imgFd, imgFd) }, () => 'ok', (n) => {
      if (n.script === 'post-resume') atResume = fx.counter();
    });
    assert.deepEqual(x.resp, { type: REQ.RESTORE, success: true, restore: { pid: fx.pid } });
    assert.equal(await finished(c), 0);
    fx.restored();
    assert.ok(atResume >= snapshot && atResume < killedAt, `restored at the snapshot (${snapshot} <= ${atResume} < ${killedAt})`);
    const { log } = await fx.terminate();
    assert.match(log, /^PASS$/m);
  } finally {
    fs.closeSync(imgFd);
  }
});

test('malformed and truncated requests, an unknown type, EMPTY, PAGE_SERVER, a NOTIFY out of turn: failure replies saying so', async () => {
  const full = encode('criu_req', { type: REQ.DUMP, opts: runcDumpOpts(1, 3, 3) });
  const cases: [Buffer, number, RegExp][] = [
    [Buffer.from([0x08, 0x81]), REQ.EMPTY, /^stasis: malformed request \(2 bytes\): truncated varint/],
    [full.subarray(0, full.length - 5), REQ.EMPTY, /^stasis: malformed request .*runs past the end/],
    [Buffer.from([0x18, 0x01]), REQ.EMPTY, /^stasis: malformed request .*required field type is missing/],
    [encode('criu_req', { type: 77 }), REQ.EMPTY, /^stasis: unknown request type 77$/],
    [encode('criu_req', { type: REQ.EMPTY }), REQ.EMPTY, /EMPTY request asks for nothing/],
    [encode('criu_req', { type: REQ.PAGE_SERVER, opts: runcDumpOpts(1, 3, 3) }), REQ.PAGE_SERVER, /PAGE_SERVER requests are not supported: stasis has no page server/],
    [encode('criu_req', { type: REQ.NOTIFY, notify_success: true }), REQ.NOTIFY, /NOTIFY requests are not supported: a NOTIFY answers a notification/],
    [encode('criu_req', { type: REQ.DUMP }), REQ.DUMP, /DUMP request without opts/],
  ];
  for (const [buf, type, re] of cases) {
    const c = client();
    c.sendRaw(buf);
    const m = await c.recv();
    assertFailed(m?.resp, type, re);
    assert.equal(await finished(c), 1, `exit status after ${re}`);
  }
  await nothingLeft(fixtures.filter((f) => f.alive).map((f) => f.pid));
});

test('unsupported options are refused by name before the tree is touched', async () => {
  const fx = await counter();
  const images = path.join(root, 'refused-images');
  const imgFd = openDir(images);
  try {
    const refused: [Partial<CriuOpts>, RegExp][] = [
      [{ lazy_pages: true }, /^stasis: criu option lazy_pages: lazy pages are not supported$/],
      [{ auto_dedup: true }, /criu option auto_dedup: deduplication against a parent checkpoint is not supported/],
      [{ external: ['pid[4026532470]:extRootPidNS'] }, /criu option external: pid\[4026532470\]:extRootPidNS: external resources other than mounts and \(at dump\) network namespaces are not supported/],
      [{ empty_ns: 0x40000000 | 0x20000 }, /criu option empty_ns: 0x40020000: only the network namespace/],
      [{ log_file: '../dump.log' }, /criu option log_file: \.\.\/dump\.log: a name in the work directory/],
      [{ leave_stopped: true }, /criu option leave_stopped: leaving the tree stopped is not supported/],
    ];
    for (const [more, re] of refused) {
      const c = client();
      const x = await c.call({ type: REQ.DUMP, opts: runcDumpOpts(fx.pid, imgFd, imgFd, more) });
      assertFailed(x.resp, REQ.DUMP, re);
      assert.deepEqual(x.notifications, [], 'refused before the first notification');
      assert.equal(x.resp!.dump?.restored, false);
      if (/criu option/.test(re.source)) assert.equal(x.resp!.cr_errno, 56, 'EBADRQC, as criu for options it cannot take');
      assert.equal(await finished(c), 1);
      assert.equal(tracerPid(fx.pid), 0);
    }
    // A directory fd the caller does not have.
    const c = client();
    const x = await c.call({ type: REQ.DUMP, opts: runcDumpOpts(fx.pid, 999, 999) });
    assertFailed(x.resp, REQ.DUMP, new RegExp(`criu option images_dir_fd: 999: not a directory open in the caller \\(pid ${process.pid}\\): ENOENT`));
    assert.equal(await finished(c), 1);
    assert.ok(!fs.existsSync(path.join(images, 'inventory.img')), 'no checkpoint written');
    await fx.assertCounting();
    const { log } = await fx.terminate();
    assert.match(log, /^PASS$/m);
  } finally {
    fs.closeSync(imgFd);
  }
});

test('the client goes away or reports a failure mid-conversation: an error reply where it can be read, the tree untouched or nothing left', async () => {
  const fx = await counter();
  const images = path.join(root, 'gone-images');
  const imgFd = openDir(images);
  try {
    // Closed before any request: nothing to answer.
    let c = client();
    c.close();
    assert.equal(await finished(c), 1);

    // Write side shut at network-lock (the tree frozen): the dump stops, the reply says why, the tree goes on.
    c = client();
    let x = await c.call({ type: REQ.DUMP, opts: runcDumpOpts(fx.pid, imgFd, imgFd) }, (n) => (n.script === 'network-lock' ? 'shutdown' : 'ok'));
    assertFailed(x.resp, REQ.DUMP, /^stasis: the client closed the connection at notification network-lock$/);
    assert.deepEqual(scripts(x.notifications), ['pre-dump', 'network-lock']);
    assert.equal(await finished(c), 1);
    assert.equal(tracerPid(fx.pid), 0, 'let go');
    await fx.assertCounting();

    // A failure reported at post-dump: the images stay, the tree goes on (network-unlock first, as criu).
    c = client();
    x = await c.call({ type: REQ.DUMP, opts: runcDumpOpts(fx.pid, imgFd, imgFd) }, (n) => (n.script === 'post-dump' ? 'fail' : 'ok'));
    assertFailed(x.resp, REQ.DUMP, /the client reported a failure at notification post-dump/);
    assert.deepEqual(scripts(x.notifications), ['pre-dump', 'network-lock', 'post-dump', 'network-unlock']);
    assert.equal(await finished(c), 1);
    await fx.assertCounting();

    // Socket closed outright at post-dump: no reply possible; the tree goes on.
    c = client();
    x = await c.call({ type: REQ.DUMP, opts: runcDumpOpts(fx.pid, imgFd, imgFd) }, (n) => (n.script === 'post-dump' ? 'close' : 'ok'));
    assert.equal(x.resp, undefined);
    assert.equal(await finished(c), 1);
    assert.equal(tracerPid(fx.pid), 0);
    await fx.assertCounting();

    // A real dump, then restores that fail part way: nothing restored is left.
    c = client();
    x = await c.call({ type: REQ.DUMP, opts: runcDumpOpts(fx.pid, imgFd, imgFd) });
    assert.equal(x.resp?.success, true, x.resp?.cr_errmsg);
    assert.equal(await finished(c), 0);
    await fx.reap();
    for (const [at, how, re] of [
      ['post-restore', 'fail', /^stasis: the client reported a failure at notification post-restore$/],
      ['setup-namespaces', 'shutdown', /^stasis: the client closed the connection at notification setup-namespaces$/],
      ['pre-resume', 'close', undefined],
    ] as const) {
      c = client();
      x = await c.call({ type: REQ.RESTORE, opts: runcRestoreOpts(imgFd, imgFd) }, (n) => (n.script === at ? how : 'ok'));
      if (re) {
        assertFailed(x.resp, REQ.RESTORE, re);
        assert.equal(x.resp!.restore?.pid, -1);
      } else assert.equal(x.resp, undefined);
      assert.equal(await finished(c), 1);
      await waitGone([fx.pid], 10000, fixtures.filter((f) => f.alive).map((f) => f.pid));
    }
    // A file of the tree asked in place of one of ours (inherit_fd): refused before anything is made.
    c = client();
    x = await c.call({ type: REQ.RESTORE, opts: runcRestoreOpts(imgFd, imgFd, { inherit_fd: [{ key: fx.logPath.slice(1), fd: 2 }] }) });
    assertFailed(x.resp, REQ.RESTORE, /criu option inherit_fd: .*\/log → fd 2: the tree has that file/);
    assert.deepEqual(x.notifications, []);
    assert.equal(await finished(c), 1);
    assert.ok(!fs.existsSync(`/proc/${fx.pid}`));
    // The images are still good: restored, it passes its own check.
    c = client();
    x = await c.call({ type: REQ.RESTORE, opts: runcRestoreOpts(imgFd, imgFd, { inherit_fd: [{ key: 'pipe:[4242]', fd: 2 }] }) });
    assert.deepEqual(x.resp, { type: REQ.RESTORE, success: true, restore: { pid: fx.pid } }, x.resp?.cr_errmsg);
    assert.equal(await finished(c), 0);
    fx.restored();
    const { log } = await fx.terminate();
    assert.match(log, /^PASS$/m);
  } finally {
    fs.closeSync(imgFd);
  }
  await nothingLeft(fixtures.filter((f) => f.alive).map((f) => f.pid));
});

test('criu --version, criu check --feature, and the commands not provided, as runc\'s and podman\'s scripts call them', () => {
  const run = (...args: string[]) => spawnSync(CRIU, args, { encoding: 'utf8' });
  let r = run('--version');
  assert.equal(r.status, 0);
  assert.equal(r.stdout, 'Version: 4.2\n');
  r = run('check', '--feature', 'external_net_ns');
  assert.equal(r.status, 0, r.stderr);
  r = run('check', '--feature', 'mem_dirty_track');
  assert.equal(r.status, 1);
  assert.match(r.stderr, /^Warn: mem_dirty_track is not supported by stasis: no incremental dumps/);
  r = run('dump', '-t', '1');
  assert.equal(r.status, 1);
  assert.match(r.stderr, /^criu \(stasis\): 'dump' is not provided: this criu serves `criu swrk FD`/);
});
