// /proc paths that name a process of the tree (src/resources/procfiles.ts):
// parsed into pid, thread and rest; checked by shape before anything exists.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { parseProcPath, nsFileNames, checkTreeProcFile } from '../../src/resources/procfiles';
import type { ProcessImage } from '../../src/unit/checkpoint';

test('parseProcPath: pid, thread, rest; other paths are not', () => {
  assert.deepEqual(parseProcPath('/proc/42/stat'), { pid: 42, tid: undefined, rest: '/stat' });
  assert.deepEqual(parseProcPath('/proc/42/task/43/status'), { pid: 42, tid: 43, rest: '/status' });
  assert.deepEqual(parseProcPath('/proc/42'), { pid: 42, tid: undefined, rest: '' });
  assert.equal(parseProcPath('/proc/self/maps'), undefined);
  assert.equal(parseProcPath('/proc/sys/kernel/ostype'), undefined);
  assert.equal(parseProcPath('/tmp/proc/42/stat'), undefined);
  assert.equal(parseProcPath('/proc/42x/stat'), undefined);
});

test('nsFileNames: the /proc/PID/ns entries a namespace fd may be', () => {
  assert.deepEqual(nsFileNames('net:[4026531840]'), ['net']);
  assert.deepEqual(nsFileNames('pid:[4026531836]'), ['pid', 'pid_for_children']);
  assert.deepEqual(nsFileNames('time:[4026531834]'), ['time', 'time_for_children']);
  assert.equal(nsFileNames('/proc/1/ns/net'), undefined);
});

const proc = (pid: number, ...tids: number[]) => ({ pid, threads: [pid, ...tids].map((tid) => ({ tid })) }) as unknown as ProcessImage;

test('checkTreeProcFile: files of the tree by shape; a second thread\'s refused; others left to the path check', () => {
  const tree = [proc(100, 101), proc(200)];
  assert.equal(checkTreeProcFile('/proc/100/stat', 'w', tree), true);
  assert.equal(checkTreeProcFile('/proc/200/task/200/maps', 'w', tree), true);
  assert.equal(checkTreeProcFile('/proc/self/ns/net', 'w', tree), true);
  assert.equal(checkTreeProcFile('/proc/300/stat', 'w', tree), false, 'not of the tree');
  assert.equal(checkTreeProcFile('/etc/hostname', 'w', tree), false);
  assert.throws(() => checkTreeProcFile('/proc/100/task/101/stat', 'w', tree), /thread 101, made after files are opened/);
  assert.throws(() => checkTreeProcFile('/proc/101/stat', 'w', tree), /thread 101/);
  assert.throws(() => checkTreeProcFile('/proc/100/no-such-entry', 'w', tree), /no \/proc\/PID\/no-such-entry on this kernel/);
});
