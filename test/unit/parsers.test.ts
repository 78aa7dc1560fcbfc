// Parsers of /proc files and the classification of mappings: pure functions.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { parseMaps, parseFdInfo, PM_PRESENT, PM_FILE, PM_SWAP } from '../../src/proc/proc';
import { parseLimits } from '../../src/resources/rlimits';
import { parseProcTimers } from '../../src/resources/timers';
import { parseEpollTargets } from '../../src/resources/eventpoll';
import { parseInotifyWatches } from '../../src/resources/inotify';
import { parseTimespec } from '../../src/resources/timerfd';
import { classify, wanted, parseVmFlags, madvOf } from '../../src/resources/memory/classify';
import { regsForImage } from '../../src/resources/core';
import { printableName } from '../../src/resources/sockets-unix';
import { credsEntry } from '../../src/resources/creds';
import { VMA } from '../../src/images/criu';
import { abi, type Regs } from '../../src/sys';

const MAPS = `55d6c2a00000-55d6c2a02000 r--p 00000000 fd:01 1835023                    /usr/bin/cat
55d6c2a02000-55d6c2a07000 r-xp 00002000 fd:01 1835023                    /usr/bin/cat
55d6c3b8e000-55d6c3baf000 rw-p 00000000 00:00 0                          [heap]
7f1d3c000000-7f1d3c021000 rw-s 00000000 00:01 4096                       /dev/zero (deleted)
7f1d3c100000-7f1d3c101000 rw-s 00000000 00:01 77                         /memfd:my name (deleted)
7f1d3c200000-7f1d3c201000 r--p 00000000 fd:01 99                         /tmp/a file with spaces
7f1d3c300000-7f1d3c301000 ---p 00000000 00:00 0 
7ffd6e8e4000-7ffd6e905000 rw-p 00000000 00:00 0                          [stack]
7ffd6e9d4000-7ffd6e9d8000 r--p 00000000 00:00 0                          [vvar]
7ffd6e9d8000-7ffd6e9da000 r-xp 00000000 00:00 0                          [vdso]
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
`;

test('maps lines: ranges, protections, sharing, paths with spaces, deleted files', () => {
  const v = parseMaps(MAPS);
  assert.equal(v.length, 11);
  assert.deepEqual([v[0].start, v[0].end, v[0].prot, v[0].shared, v[0].path], [0x55d6c2a00000n, 0x55d6c2a02000n, abi.PROT.READ, false, '/usr/bin/cat']);
  assert.equal(v[1].pgoff, 0x2000n);
  assert.deepEqual([v[3].path, v[3].deleted, v[3].shared], ['/dev/zero', true, true]);
  assert.equal(v[5].path, '/tmp/a file with spaces');
  assert.equal(v[6].prot, 0);
  assert.equal(v[10].end, 0xffffffffff601000n);
  assert.throws(() => parseMaps('garbage\n'), /unparsable maps line/);
});

test('classify: which mappings carry which pages', () => {
  const v = parseMaps(MAPS).map(classify);
  assert.equal(v[0].status, VMA.AREA_REGULAR | VMA.FILE_PRIVATE);
  assert.equal(v[0].policy, 'cow-copies');
  assert.equal(v[2].status, VMA.AREA_REGULAR | VMA.AREA_HEAP | VMA.ANON_PRIVATE);
  assert.equal(v[3].status, VMA.AREA_REGULAR | VMA.ANON_SHARED, 'MAP_SHARED|MAP_ANONYMOUS');
  assert.equal(v[3].policy, 'shared-anon');
  assert.ok(v[4].memfd && v[4].status & VMA.AREA_MEMFD && v[4].status & VMA.FILE_SHARED);
  assert.equal(v[4].policy, 'none', 'a shared memfd mapping lives in the memfd');
  assert.equal(v[7].flags & abi.MAP.GROWSDOWN, abi.MAP.GROWSDOWN);
  assert.equal(v[8].policy, 'none');
  assert.equal(v[9].status, VMA.AREA_REGULAR | VMA.AREA_VDSO);
  assert.equal(v[10].status, VMA.AREA_VSYSCALL);
  assert.throws(() => classify({ ...parseMaps(MAPS)[0], path: '/SYSV00000000', shared: true }), /System V shared memory/);
  // A deleted file's mapping is one of its ghost (regfile.ts): the same kinds, marked deleted.
  const gone = classify({ ...parseMaps(MAPS)[0], deleted: true });
  assert.deepEqual([gone.status, gone.policy, gone.deleted], [VMA.AREA_REGULAR | VMA.FILE_PRIVATE, 'cow-copies', true]);
  assert.equal(v[0].deleted, undefined);
  assert.ok(wanted('cow-copies', PM_PRESENT) && !wanted('cow-copies', PM_PRESENT | PM_FILE) && wanted('cow-copies', PM_SWAP));
  assert.ok(wanted('anon', PM_PRESENT) && !wanted('anon', 0n) && !wanted('none', PM_PRESENT));
});

test('smaps VmFlags become madvise advice bits', () => {
  const m = parseVmFlags('7f00-7f10 rw-p 0 0:0 0\nSize: 4 kB\nVmFlags: rd wr mr mw me ac dc hg \n');
  assert.deepEqual(m.get(0x7f00n), ['rd', 'wr', 'mr', 'mw', 'me', 'ac', 'dc', 'hg']);
  assert.equal(madvOf(m.get(0x7f00n)!), (1n << BigInt(abi.MADV.DONTFORK)) | (1n << BigInt(abi.MADV.HUGEPAGE)));
});

test('/proc/PID/limits, including this process\'s own', () => {
  const own = parseLimits(fs.readFileSync('/proc/self/limits', 'utf8'));
  assert.equal(own.length, abi.RLIMIT_NLIMITS);
  const text = `Limit                     Soft Limit           Hard Limit           Units     
Max cpu time              unlimited            unlimited            seconds   
Max file size             unlimited            unlimited            bytes     
Max data size             unlimited            unlimited            bytes     
Max stack size            8388608              unlimited            bytes     
Max core file size        0                    unlimited            bytes     
Max resident set          unlimited            unlimited            bytes     
Max processes             96364                96364                processes 
Max open files            1024                 524288               files     
Max locked memory         8388608              8388608              bytes     
Max address space         unlimited            unlimited            bytes     
Max file locks            unlimited            unlimited            locks     
Max pending signals       96364                96364                signals   
Max msgqueue size         819200               819200               bytes     
Max nice priority         0                    0                    
Max realtime priority     0                    0                    
Max realtime timeout      unlimited            unlimited            us        
`;
  const l = parseLimits(text);
  assert.deepEqual(l[7], { cur: 1024n, max: 524288n }, 'NOFILE');
  assert.deepEqual(l[3], { cur: 8388608n, max: abi.RLIM_INFINITY }, 'STACK');
  assert.deepEqual(l[13], { cur: 0n, max: 0n }, 'NICE, no unit');
  assert.throws(() => parseLimits('Limit\nMax cpu time   1  1\n'), /1 limits, expected 16/);
});

test('fdinfo: pos, octal flags and the rest by key', () => {
  const f = parseFdInfo('pos:\t12\nflags:\t02004002\nmnt_id:\t25\nino:\t77\neventfd-count:                5\n');
  assert.equal(f.pos, 12n);
  assert.equal(f.flags, abi.O.CLOEXEC | abi.O.NONBLOCK | abi.O.RDWR);
  assert.equal(f.extra.get('eventfd-count'), '5');
});

test('epoll targets, inotify watches, timerfd times, POSIX timers', () => {
  const ep = parseEpollTargets('pos:\t0\ntfd:        5 events:       19 data:         5000000003  pos:0 ino:3f1 sdev:f\ntfd:        7 events:       1 data: 7 pos:0 ino:a sdev:e\n');
  assert.deepEqual(ep.map((t) => [t.tfd, t.events, t.data]), [[5, 0x19, 0x5000000003n], [7, 1, 7n]]);
  const w = parseInotifyWatches('inotify wd:2 ino:bf sdev:fd00001 mask:fce ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:bf00000000000000\ninotify wd:1 ino:c0 sdev:fd00001 mask:2 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:c000000001020304\n');
  assert.deepEqual(w.map((x) => x.wd), [1, 2], 'in wd order');
  assert.deepEqual(w[0].handle, Buffer.from('c000000001020304', 'hex'));
  assert.equal(w[1].sdev, 0xfd00001);
  assert.deepEqual(parseTimespec('(1, 500000000)'), [1n, 500000000n]);
  const t = parseProcTimers('ID: 1\nsignal: 14/0000000000000000\nnotify: signal/pid.42\nClockID: 1\nID: 3\nsignal: 10/00007ffd00001000\nnotify: thread/tid.43\nClockID: 0\n');
  assert.deepEqual(t, [
    { id: 1, signo: 14, sival: 0n, notify: abi.SIGEV.SIGNAL, tid: 42, clock: 1 },
    { id: 3, signo: 10, sival: 0x7ffd00001000n, notify: abi.SIGEV.THREAD | abi.SIGEV.THREAD_ID, tid: 43, clock: 0 },
  ]);
});

test('registers as they go into an image: restartable syscalls rewound, restart blocks become EINTR', () => {
  const base = Object.fromEntries(abi.USER_REGS_FIELDS.map((n) => [n, 0n])) as Regs;
  const neg = (n: number) => BigInt.asUintN(64, BigInt(-n));
  const r1 = regsForImage({ ...base, orig_rax: 7n, rax: neg(abi.ERESTART.SYS), rip: 0x1002n });
  assert.deepEqual([r1.rax, r1.rip], [7n, 0x1000n]);
  const r2 = regsForImage({ ...base, orig_rax: 230n, rax: neg(abi.ERESTART.RESTARTBLOCK), rip: 0x1002n });
  assert.deepEqual([r2.rax, r2.rip], [neg(abi.ERRNO.EINTR), 0x1002n]);
  const r3 = regsForImage({ ...base, orig_rax: neg(1), rax: neg(abi.ERESTART.SYS), rip: 0x1002n });
  assert.equal(r3.rip, 0x1002n, 'not in a syscall: untouched');
});

test('credentials from /proc status lines', () => {
  const st = new Map([['Uid', '1000\t1001\t1002\t1003'], ['Gid', '100\t101\t102\t103'], ['Groups', '4 24 27 '], ['CapEff', '000001ffffffffff'], ['CapBnd', '0000000000000000']]);
  const c = credsEntry(st, 0x2f);
  assert.deepEqual([c.uid, c.euid, c.suid, c.fsuid, c.gid, c.fsgid], [1000, 1001, 1002, 1003, 100, 103]);
  assert.deepEqual(c.groups, [4, 24, 27]);
  assert.deepEqual(c.cap_eff, [0xffffffff, 0x1ff]);
  assert.deepEqual(c.cap_bnd, [0, 0]);
  assert.equal(c.secbits, 0x2f);
});

test('unix socket names in messages: abstract with @, any control byte escaped (one line)', () => {
  assert.equal(printableName(Buffer.from('/run/x.sock')), '/run/x.sock');
  assert.equal(printableName(Buffer.from('\0stasis-1\0\0\n')), '@stasis-1\\x00\\x00\\x0a');
  assert.equal(printableName(Buffer.alloc(0)), '');
});
