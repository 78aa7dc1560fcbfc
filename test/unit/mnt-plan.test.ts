// How the mounts of a mount namespace are re-created, and mountinfo parsing.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { parseMountInfo, kdev, optionalField, unescapeMount } from '../../src/proc/mountinfo';
import { planMounts, mountFlags, fsOptions, sbFlags, fstypeOf, FSTYPE, under } from '../../src/resources/ns/mnt-plan';
import { abi } from '../../src/sys';

const { MS } = abi;
const INFO = `26 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
21 26 0:20 / /proc rw,relatime - proc proc rw
90 26 0:55 / /tmp/w/mnt rw,nosuid,relatime shared:7 - tmpfs stasis-test rw,size=1024k,mode=755
91 26 0:55 /sub /tmp/w/bind ro,relatime shared:7 - tmpfs stasis-test rw,size=1024k,mode=755
92 26 254:0 /srv/data /data rw,relatime master:3 - ext4 /dev/vda rw
93 26 0:77 / /weird\\040dir rw - fuse.sshfs host:/x rw
`;

test('mountinfo lines: ids, devices, escaped paths, propagation, options', () => {
  const m = parseMountInfo(INFO);
  assert.equal(m.length, 6);
  assert.deepEqual([m[2].id, m[2].parent, m[2].dev, m[2].root, m[2].mountpoint, m[2].fstype, m[2].source], [90, 26, '0:55', '/', '/tmp/w/mnt', 'tmpfs', 'stasis-test']);
  assert.equal(optionalField(m[2], 'shared'), 7);
  assert.equal(optionalField(m[4], 'master'), 3);
  assert.equal(m[5].mountpoint, '/weird dir');
  assert.equal(unescapeMount('a\\011b\\134c'), 'a\tb\\c');
  assert.equal(kdev('254:0'), 254 << 20);
  assert.equal(fsOptions(m[2]), 'size=1024k,mode=755');
  assert.equal(mountFlags(m[3]), MS.RDONLY | MS.RELATIME | MS.SHARED);
  assert.equal(mountFlags(m[5]) & MS.STRICTATIME, MS.STRICTATIME, 'neither relatime nor noatime: strictatime');
  assert.equal(sbFlags(parseMountInfo('1 0 0:1 / / rw - tmpfs x ro,sync\n')[0]), MS.RDONLY | MS.SYNCHRONOUS);
  assert.equal(fstypeOf('fuse.sshfs'), FSTYPE.UNSUPPORTED);
  assert.equal(fstypeOf('cgroup2'), FSTYPE.CGROUP2);
});

test('plans: host binds, new filesystems, binds of the tree’s own, refusals', () => {
  const mounts = parseMountInfo(INFO).map((m) => ({ mnt_id: m.id, root_dev: kdev(m.dev), root: m.root, mountpoint: m.mountpoint, fstype: fstypeOf(m.fstype) }));
  const host = [{ dev: kdev('254:0'), root: '/', mountpoint: '/' }, { dev: kdev('0:20'), root: '/', mountpoint: '/proc' }];
  const p = planMounts(mounts, host);
  assert.deepEqual(p.get(26), { how: 'host', from: '/' });
  assert.deepEqual(p.get(21), { how: 'host', from: '/proc' }, 'the host’s proc: bound again');
  assert.deepEqual(p.get(90), { how: 'create' }, 'a tmpfs of its own: made anew');
  assert.deepEqual(p.get(91), { how: 'bind', from: 90, sub: '/sub' });
  assert.deepEqual(p.get(92), { how: 'host', from: '/srv/data' });
  assert.match((p.get(93) as { error: string }).error, /mount \/weird dir .* is neither mounted here nor a filesystem that can be made anew/);
  const noRoot = planMounts(mounts.slice(0, 1), []);
  assert.match((noRoot.get(26) as { error: string }).error, /restore with --root DIR/);
  assert.deepEqual(planMounts(mounts.slice(0, 1), [], '/srv/rootfs').get(26), { how: 'host', from: '/srv/rootfs' });
  assert.equal(under('/a/b', '/a'), '/b');
  assert.equal(under('/ab', '/a'), undefined);
  assert.equal(under('/a', '/a'), '/');
});
