// How the mounts of a mount namespace are re-created, and mountinfo parsing.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { parseMountInfo, kdev, optionalField, unescapeMount } from '../../src/proc/mountinfo';
import { planMounts, buildOrder, parseExternalMounts, mountFlags, fsOptions, sbFlags, fstypeOf, FSTYPE, under } from '../../src/resources/ns/mnt-plan';
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
  const mounts = parseMountInfo(INFO).map((m) => ({ mnt_id: m.id, parent_mnt_id: m.parent, root_dev: kdev(m.dev), root: m.root, mountpoint: m.mountpoint, fstype: fstypeOf(m.fstype) }));
  const host = [{ dev: kdev('254:0'), root: '/', mountpoint: '/' }, { dev: kdev('0:20'), root: '/', mountpoint: '/proc' }];
  const p = planMounts(mounts, host);
  assert.deepEqual(p.get(26), { how: 'host', from: '/' });
  assert.deepEqual(p.get(21), { how: 'create' }, 'a proc: made anew even where a host mount has its device number (it shows the namespaces of whoever mounts it)');
  assert.deepEqual(p.get(90), { how: 'create' }, 'a tmpfs of its own: made anew');
  assert.deepEqual(p.get(91), { how: 'bind', from: 90, sub: '/sub' });
  assert.deepEqual(p.get(92), { how: 'host', from: '/srv/data' });
  assert.match((p.get(93) as { error: string }).error, /mount \/weird dir .* is neither mounted here nor a filesystem that can be made anew/);
  const noRoot = planMounts(mounts.slice(0, 1), []);
  assert.match((noRoot.get(26) as { error: string }).error, /restore with --root DIR/);
  assert.deepEqual(planMounts(mounts.slice(0, 1), [], { rootDir: '/srv/rootfs' }).get(26), { how: 'host', from: '/srv/rootfs' });
  assert.equal(under('/a/b', '/a'), '/b');
  assert.equal(under('/ab', '/a'), undefined);
  assert.equal(under('/a', '/a'), '/');
});

// A runc container's masked paths: /proc/keys is its own /dev's null, bound
// before /dev is listed (mountinfo order); /data is external.
const RUNC = `88 65 254:0 /var/tmp/b/rootfs / rw,relatime - ext4 /dev/vda rw
89 88 0:39 / /proc rw,relatime - proc proc rw
71 89 0:40 /null /proc/keys rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755
66 89 0:39 /bus /proc/bus ro,relatime - proc proc rw
90 88 0:40 / /dev rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755
105 88 254:0 /var/tmp/hostdir /data rw,relatime - ext4 /dev/vda rw
`;

test('plans: a bind of the tree’s own filesystem listed before its source is mounted after it; external mounts', () => {
  const mounts = parseMountInfo(RUNC).map((m) => ({ mnt_id: m.id, parent_mnt_id: m.parent, root_dev: kdev(m.dev), root: m.root, mountpoint: m.mountpoint, fstype: fstypeOf(m.fstype), ext_key: m.id === 105 ? 'data' : undefined }));
  const host = [{ dev: kdev('254:0'), root: '/', mountpoint: '/' }];
  const p = planMounts(mounts, host, { external: new Map([['data', '/srv/elsewhere']]) });
  assert.deepEqual(p.get(71), { how: 'bind', from: 90, sub: '/null' });
  assert.deepEqual(p.get(66), { how: 'bind', from: 89, sub: '/bus' });
  assert.deepEqual(p.get(88), { how: 'host', from: '/var/tmp/b/rootfs' });
  assert.deepEqual(p.get(105), { how: 'host', from: '/srv/elsewhere' }, 'external: from what its key maps to, not from where it was');
  assert.deepEqual(buildOrder(mounts, p).map((m) => m.mnt_id), [88, 89, 66, 90, 105, 71]);
  assert.match((planMounts(mounts, host).get(105) as { error: string }).error, /dumped as external \(key data\): restore with --external mnt\[data\]:PATH/);
  assert.deepEqual(planMounts(mounts, [], { dumping: true }).get(105), { how: 'host', from: 'external:data' }, 'at dump an external mount needs nothing here');
  const loop = [{ mnt_id: 1, parent_mnt_id: 0, root_dev: 9, root: '/', mountpoint: '/', fstype: FSTYPE.TMPFS }, { mnt_id: 2, parent_mnt_id: 3, root_dev: 9, root: '/a', mountpoint: '/x', fstype: FSTYPE.TMPFS }, { mnt_id: 3, parent_mnt_id: 2, root_dev: 9, root: '/b', mountpoint: '/y', fstype: FSTYPE.TMPFS }];
  assert.throws(() => buildOrder(loop, planMounts(loop, [])), /bound from each other/);
});

test('--external mnt[...] forms', () => {
  assert.deepEqual([...parseExternalMounts(['mnt[/data]:data', 'mnt[/etc/hosts]:hosts'], 'dump')], [['/data', 'data'], ['/etc/hosts', 'hosts']]);
  assert.deepEqual([...parseExternalMounts(['mnt[data]:/srv/x'], 'restore')], [['data', '/srv/x']]);
  assert.throws(() => parseExternalMounts(['veth[eth0]:v1'], 'dump'), /external veth resources are not supported/);
  assert.throws(() => parseExternalMounts(['mnt[data]:x'], 'restore'), /must be absolute/);
  assert.throws(() => parseExternalMounts(['mnt[data]:/x'], 'dump'), /mountpoint must be an absolute path/);
  assert.throws(() => parseExternalMounts(['data:/x'], 'restore'), /expected mnt\[KEY\]:PATH/);
});
