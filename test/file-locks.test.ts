// File locks: POSIX, OFD and flock locks are carried by the same open file
// descriptions, always (criu's --file-locks is accepted and changes
// nothing); one taken by someone else by the restore makes it fail, leaving
// nothing. A real program: sqlite3 with a write transaction open at the
// dump. Leases: file-leases.test.ts.
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync, spawn } from 'node:child_process';
import {
  Fixture, initHarness, runStasis, describeCli, tmpDir, restoreDetached, waitGone, waitFor, crit,
} from './harness';
import { abi } from '../src/sys';

let root: string;
before(() => { initHarness(); root = tmpDir('locks'); });
after(() => fs.rmSync(root, { recursive: true, force: true }));

test('POSIX, OFD and flock locks: dumped and re-taken with no option', async () => {
  const fx = await Fixture.start('locks', { extraFds: true });
  try {
    const dir = path.join(root, 'images');
    const d = runStasis(['dump', '-t', String(fx.pid), '-D', dir]);
    assert.equal(d.status, 0, describeCli(d));
    await fx.reap();
    await waitGone([fx.pid]);
    const locks = JSON.parse(crit(['decode', '-i', path.join(dir, 'file-locks.img')])).entries as { flag: number; type: number; start: number; len: number }[];
    assert.deepEqual(locks.map((l) => [l.flag, l.type, Number(l.start), Number(l.len)]).sort(), [
      [1, abi.LOCK_TYPE.WRLCK, 100, 50], [1, abi.LOCK_TYPE.RDLCK, 1000, 1], [2, abi.LOCK_TYPE.RDLCK, 0, 0], [4, abi.LOCK_TYPE.WRLCK, 0, 10],
    ].sort(), 'POSIX (1), flock (2), OFD (4) as crit reads them');
    restoreDetached(dir);
    fx.restored();
    const { log } = await fx.terminate();
    assert.match(log, /^PASS$/m, log);
  } finally {
    await fx.kill();
  }
});

test('a lock someone else took by the restore: the restore fails with one line and leaves nothing; once freed it restores', async () => {
  const fx = await Fixture.start('locks', { extraFds: true });
  let holder: ReturnType<typeof spawn> | undefined;
  try {
    const dir = path.join(root, 'taken-images');
    const d = runStasis(['dump', '-t', String(fx.pid), '-D', dir]);
    assert.equal(d.status, 0, describeCli(d));
    await fx.reap();
    await waitGone([fx.pid]);
    // Another process takes the flock() lock the dumped one held.
    holder = spawn('python3', ['-c', 'import fcntl, sys; f = open(sys.argv[1], "r+"); fcntl.flock(f, fcntl.LOCK_EX); print("HELD", flush=True); sys.stdin.read()', path.join(fx.dir, 'flock')], { stdio: ['pipe', 'pipe', 'inherit'] });
    let out = '';
    holder.stdout!.on('data', (b: Buffer) => { out += b.toString(); });
    await waitFor('the other process to hold the lock', () => out.includes('HELD'), 10000, 5);
    const r = runStasis(['restore', '-D', dir, '-d']);
    assert.equal(r.status, 1, describeCli(r));
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.match(r.stderr, /cannot take the flock lock of fd \d+ again .*locked by another process/);
    assert.ok(!fs.existsSync(`/proc/${fx.pid}`), 'nothing restored');
    const gone = new Promise((res) => holder!.on('exit', res));
    holder.stdin!.end();
    await gone;
    holder = undefined;
    restoreDetached(dir);
    fx.restored();
    const { log } = await fx.terminate();
    assert.match(log, /^PASS$/m, log);
  } finally {
    holder?.kill('SIGKILL');
    await fx.kill();
  }
});

const SQLITE_WRITER = `
import os, sys, signal, sqlite3, time
db = sqlite3.connect(sys.argv[2], isolation_level=None, timeout=0)
db.execute('CREATE TABLE IF NOT EXISTS t(who TEXT)')
db.execute("INSERT INTO t VALUES ('before')")
commit = []
signal.signal(signal.SIGUSR1, lambda s, f: commit.append(1))
signal.signal(signal.SIGTERM, lambda s, f: sys.exit(0))
db.execute('BEGIN IMMEDIATE')
db.execute("INSERT INTO t VALUES ('held across the checkpoint')")
print('PID', os.getpid(), flush=True)
print('READY', flush=True)
while not commit:
    time.sleep(0.01)
db.execute('COMMIT')
print('COMMITTED', flush=True)
while True:
    time.sleep(1)
`;

const SQLITE_OTHER = `
import sys, sqlite3
db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=0)
try:
    db.execute('BEGIN IMMEDIATE')
    db.execute("INSERT INTO t VALUES ('second writer')")
    db.execute('COMMIT')
    print('WROTE')
except sqlite3.OperationalError as e:
    print('LOCKED' if 'locked' in str(e) else 'ERROR ' + str(e))
print('ROWS', ','.join(r[0] for r in db.execute('SELECT who FROM t ORDER BY rowid')))
print('CHECK', db.execute('PRAGMA integrity_check').fetchone()[0])
`;

test('sqlite3: a write transaction open at the dump still excludes a second writer after restore, then commits', async () => {
  const script = path.join(root, 'writer.py');
  const other = path.join(root, 'other.py');
  fs.writeFileSync(script, SQLITE_WRITER);
  fs.writeFileSync(other, SQLITE_OTHER);
  const fx = await Fixture.startCommand('sqlite', (d) => ['python3', script, d, path.join(d, 'db.sqlite')], { extraFds: true });
  const db = path.join(fx.dir, 'db.sqlite');
  const second = () => spawnSync('python3', [other, db], { encoding: 'utf8' }).stdout;
  try {
    assert.match(second(), /^LOCKED$/m, 'the transaction is open before the dump');
    const dir = path.join(root, 'sqlite-images');
    // criu's spelling, accepted.
    const d = runStasis(['dump', '-t', String(fx.pid), '-D', dir, '--file-locks']);
    assert.equal(d.status, 0, describeCli(d));
    await fx.reap();
    await waitGone([fx.pid]);
    restoreDetached(dir, ['--file-locks']);
    fx.restored();
    const while1 = second();
    assert.match(while1, /^LOCKED$/m, `a second writer is still locked out after the restore:\n${while1}`);
    process.kill(fx.pid, 'SIGUSR1');
    await fx.waitLog(/^COMMITTED$/m);
    const after1 = second();
    assert.match(after1, /^WROTE$/m, after1);
    assert.match(after1, /^ROWS before,held across the checkpoint,second writer$/m, 'the restored writer\'s row committed, nothing lost');
    assert.match(after1, /^CHECK ok$/m);
  } finally {
    await fx.kill();
  }
});
