// The units as declared: every kind of open file matches a set of fds no
// other kind matches (so no kind depends on list order), and each unit's
// phases name phases that exist.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import type * as fs from 'node:fs';
import { UNITS } from '../../src/resources/registry';
import type { FdDesc } from '../../src/unit/unit';
import { parseFdInfo } from '../../src/proc/proc';
import { abi } from '../../src/sys';

/** anon: an anonymous inode (eventfd, epoll...), whose mode has no file type bits. */
type Kind = 'file' | 'dir' | 'fifo' | 'chr' | 'anon';
/** rdev: a character device's number, as stat(2) gives it (major << 8 | minor for small ones). */
function fd(kind: Kind, link: string, rdev = 0): FdDesc {
  const st = {
    isFile: () => kind === 'file', isDirectory: () => kind === 'dir', isFIFO: () => kind === 'fifo',
    isCharacterDevice: () => kind === 'chr', isSocket: () => false, isBlockDevice: () => false, isSymbolicLink: () => false,
    ino: 1, dev: 1, rdev, size: 0, mode: 0, uid: 0, gid: 0,
  } as unknown as fs.Stats;
  return { pid: 1, fd: 3, link, st, info: parseFdInfo('pos:\t0\nflags:\t02\n'), flags: 2 };
}

const SAMPLES: [FdDesc, string][] = [
  [fd('file', '/etc/passwd'), 'regular files'],
  [fd('dir', '/tmp'), 'regular files'],
  [fd('chr', '/dev/null', 0x103), 'regular files'],
  [fd('file', '/memfd:x (deleted)'), 'memfd'],
  [fd('fifo', 'pipe:[123]'), 'pipes'],
  [fd('fifo', '/tmp/fifo'), 'fifo'],
  [fd('file', 'anon_inode:[eventfd]'), 'eventfd'],
  [fd('file', 'anon_inode:[eventpoll]'), 'epoll'],
  [fd('file', 'anon_inode:[signalfd]'), 'signalfd'],
  [fd('file', 'anon_inode:[timerfd]'), 'timerfd'],
  [fd('anon', 'anon_inode:inotify'), 'inotify'],
  [fd('chr', '/dev/pts/3', 0x8803), 'terminal'],
  [fd('chr', '/dev/pts/3 (deleted)', 0x8803), 'terminal'],
  [fd('chr', '/dev/ptmx', 0x502), 'terminal'],
  [fd('chr', '/dev/tty', 0x500), 'terminal'],
  [fd('chr', '/tmp/vt', 0x405), 'terminal'],
  [fd('chr', '/dev/sda', 0x800), ''],
  // A deleted device node: a ghost (refused at dump unless its device is stateless); a terminal's is the terminal's.
  [fd('chr', '/tmp/node (deleted)', 0x103), 'regular files'],
  [fd('file', 'anon_inode:[fanotify]'), ''],
];

test('every fd is matched by at most one kind of file', () => {
  const kinds = UNITS.filter((u) => u.file);
  for (const [d, want] of SAMPLES) {
    const matching = kinds.filter((u) => u.file!.match(d)).map((u) => u.name);
    assert.deepEqual(matching, want ? [want] : [], `${d.link}: matched by ${matching.join(', ') || 'none'}`);
  }
});

test('an O_PATH fd goes to the one kind taking O_PATH fds, whatever its inode', () => {
  const opath = UNITS.filter((u) => u.file?.opath);
  assert.deepEqual(opath.map((u) => u.name), ['regular files']);
  for (const kind of ['file', 'dir', 'fifo', 'chr'] as const) {
    const d = { ...fd(kind, '/tmp/x'), flags: abi.O.PATH };
    assert.ok(opath[0].file!.match(d), kind);
  }
  assert.ok(!opath[0].file!.match({ ...fd('fifo', 'pipe:[7]'), flags: abi.O.PATH }), 'no path to open again');
});

test('unit names are unique, kinds have distinct fd types and fields', () => {
  const names = UNITS.map((u) => u.name);
  assert.equal(new Set(names).size, names.length);
  const kinds = UNITS.filter((u) => u.file).map((u) => u.file!);
  assert.equal(new Set(kinds.map((k) => k.type)).size, kinds.length);
  assert.equal(new Set(kinds.map((k) => k.field)).size, kinds.length);
});
