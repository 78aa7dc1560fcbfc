// The network lock's pure parts: connections as the firewall sees them, the
// nft and iptables rules made for them, the comment naming a lock's owner
// and images, and what restore accepts from an inventory (the lock id goes
// into firewall commands: nothing but our own ids).
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { connOf, netlockUnit } from '../../src/resources/netlock';
import { lockComment, parseComment, nftTable, nftAddElements, iptRules, iptChains } from '../../src/resources/netlock-rules';
import { ErrorCodes } from '../../src/errors';
import type { Loading } from '../../src/unit/checkpoint';
import type { Msg } from '../../src/images/schema';

/** Address words as CRIU stores them: network-order bytes read little-endian. */
function words(bytes: number[]): number[] {
  const b = Buffer.from(bytes);
  return Array.from({ length: b.length / 4 }, (_, i) => b.readUInt32LE(i * 4));
}
const V4_LOOPBACK = words([127, 0, 0, 1]);
const V6_LOOPBACK = words([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
const V4_MAPPED = words([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 1, 2, 3]);
const AF_INET = 2, AF_INET6 = 10;

test('connections: IPv4, IPv6, and a v4-mapped IPv6 address locked as IPv4 (its packets are IPv4)', () => {
  assert.deepEqual(connOf(AF_INET, { port: 80, words: V4_LOOPBACK }, { port: 5000, words: words([192, 168, 0, 9]) }),
    { v6: false, local: '127.0.0.1', lport: 80, peer: '192.168.0.9', pport: 5000 });
  assert.deepEqual(connOf(AF_INET6, { port: 80, words: V6_LOOPBACK }, { port: 5000, words: V6_LOOPBACK }),
    { v6: true, local: '0000:0000:0000:0000:0000:0000:0000:0001', lport: 80, peer: '0000:0000:0000:0000:0000:0000:0000:0001', pport: 5000 });
  assert.deepEqual(connOf(AF_INET6, { port: 80, words: V4_MAPPED }, { port: 5000, words: V4_MAPPED }),
    { v6: false, local: '10.1.2.3', lport: 80, peer: '10.1.2.3', pport: 5000 });
});

test('nft: one element per connection (peer . port . local . port), in the set of its family; owner flag only while dumping', () => {
  const c4 = { v6: false, local: '127.0.0.1', lport: 80, peer: '10.0.0.2', pport: 5000 };
  const c6 = { v6: true, local: '::1', lport: 81, peer: '::2', pport: 5001 };
  assert.deepEqual(nftAddElements('stasis-ab', [c4, c6]), [
    'add element inet stasis-ab conns4 { 10.0.0.2 . 5000 . 127.0.0.1 . 80 }',
    'add element inet stasis-ab conns6 { ::2 . 5001 . ::1 . 81 }',
  ]);
  const owned = nftTable('stasis-ab-dumping', 'stasis pid=1 images=/x', [], true);
  assert.equal(owned[0], 'add table inet stasis-ab-dumping { flags owner; comment "stasis pid=1 images=/x"; }');
  assert.ok(owned.includes('add rule inet stasis-ab-dumping input ip saddr . tcp sport . ip daddr . tcp dport @conns4 drop'));
  assert.ok(owned.includes('add rule inet stasis-ab-dumping output ip daddr . tcp dport . ip saddr . tcp sport @conns4 drop'));
  assert.equal(owned.filter((l) => l.startsWith('add element')).length, 0);
  const kept = nftTable('stasis-ab', 'c', [c4], false);
  assert.equal(kept[0], 'add table inet stasis-ab { comment "c"; }');
  assert.equal(kept[kept.length - 1], 'add element inet stasis-ab conns4 { 10.0.0.2 . 5000 . 127.0.0.1 . 80 }');
});

test('iptables: CRIU\'s rule shape in chains of ours, jumped to from INPUT and OUTPUT with the comment', () => {
  assert.deepEqual(iptRules('ab', { v6: false, local: '127.0.0.1', lport: 80, peer: '10.0.0.2', pport: 5000 }), [
    '-A STASIS-ab-IN -p tcp -s 10.0.0.2 -d 127.0.0.1 --sport 5000 --dport 80 -j DROP',
    '-A STASIS-ab-OUT -p tcp -s 127.0.0.1 -d 10.0.0.2 --sport 80 --dport 5000 -j DROP',
  ]);
  assert.deepEqual(iptChains('ab', 'stasis pid=1 images=/x'), [
    ':STASIS-ab-IN - [0:0]', ':STASIS-ab-OUT - [0:0]',
    '-I INPUT -m comment --comment "stasis pid=1 images=/x" -j STASIS-ab-IN',
    '-I OUTPUT -m comment --comment "stasis pid=1 images=/x" -j STASIS-ab-OUT',
  ]);
});

test('the comment: pid and images directory, at most 128 characters, quotes and controls replaced', () => {
  assert.equal(lockComment(42, '/srv/ckpt/one'), 'stasis pid=42 images=/srv/ckpt/one');
  assert.deepEqual(parseComment('stasis pid=42 images=/srv/ckpt/one'), { pid: 42, images: '/srv/ckpt/one' });
  const long = lockComment(42, `/srv/${'d'.repeat(200)}/end`);
  assert.equal(long.length, 128);
  assert.ok(long.endsWith('/end') && long.includes('images=...'));
  assert.deepEqual(parseComment(long), { pid: 42, images: undefined }, 'a cut path is not taken for a directory');
  const odd = lockComment(7, '/a"b\\c\nd');
  assert.equal(odd, 'stasis pid=7 images=/a?b?c?d');
  assert.deepEqual(parseComment(odd), { pid: 7, images: undefined });
  assert.deepEqual(parseComment('something else'), {});
});

function loadWith(inv: Partial<Msg<'inventory_entry'>>) {
  const ld = { inventory: { img_version: 2, ...inv }, images: { path: (f: string) => `/ckpt/${f}` } } as unknown as Loading;
  return netlockUnit.load!(ld);
}

test('restore takes the lock from the inventory; an id not of ours is never used; an unknown method is a BAD_IMAGE', () => {
  assert.deepEqual(loadWith({}), {});
  assert.deepEqual(loadWith({ network_lock_method: 1, dump_criu_run_id: '0123456789ab' }), { method: 'nftables', id: '0123456789ab' });
  assert.deepEqual(loadWith({ network_lock_method: 0 }), { method: 'iptables' });
  assert.deepEqual(loadWith({ network_lock_method: 2, dump_criu_run_id: 'ab' }), { method: 'skip' }, 'the skip method leaves nothing to remove');
  // criu's run ids (a uuid), or anything else, never reach a firewall command.
  assert.deepEqual(loadWith({ network_lock_method: 1, dump_criu_run_id: '5b6bd4e2-2a6c-4c8e-9d5e-0a1b2c3d4e5f' }), { method: 'nftables', foreign: '5b6bd4e2-2a6c-4c8e-9d5e-0a1b2c3d4e5f' });
  assert.deepEqual(loadWith({ network_lock_method: 1, dump_criu_run_id: 'x; flush ruleset' }), { method: 'nftables', foreign: 'x; flush ruleset' });
  assert.deepEqual(loadWith({ network_lock_method: 0, dump_criu_run_id: '' }), { method: 'iptables', foreign: '' });
  assert.throws(() => loadWith({ network_lock_method: 7 }), (e: Error & { code?: string }) =>
    e.code === ErrorCodes.BAD_IMAGE && e.message === '/ckpt/inventory.img: unknown network_lock_method 7');
});
