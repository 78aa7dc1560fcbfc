// Declared ordering of phases and loads.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { order } from '../../src/unit/order';
import { dumpPhases } from '../../src/dump/dump';
import { restorePhases } from '../../src/restore/restore';

const names = (xs: { name: string }[]) => xs.map((x) => x.name);

test('order follows after/before, list order only breaks ties', () => {
  assert.deepEqual(names(order([{ name: 'c', after: ['b'] }, { name: 'a' }, { name: 'b', after: ['a'] }], 't')), ['a', 'b', 'c']);
  assert.deepEqual(names(order([{ name: 'x' }, { name: 'y', before: ['x'] }], 't')), ['y', 'x']);
  assert.deepEqual(names(order([{ name: 'p' }, { name: 'q' }], 't')), ['p', 'q']);
});

test('order refuses cycles, unknown names and duplicates', () => {
  assert.throws(() => order([{ name: 'a', after: ['b'] }, { name: 'b', after: ['a'] }], 't'), /a, b has a cycle/);
  assert.throws(() => order([{ name: 'a', after: ['zz'] }], 't'), /after unknown 'zz'/);
  assert.throws(() => order([{ name: 'a', before: ['zz'] }], 't'), /before unknown 'zz'/);
  assert.throws(() => order([{ name: 'a' }, { name: 'a' }], 't'), /declared twice/);
});

function before(list: string[], a: string, b: string): void {
  assert.ok(list.indexOf(a) >= 0 && list.indexOf(b) >= 0, `${a} and ${b} exist`);
  assert.ok(list.indexOf(a) < list.indexOf(b), `${a} before ${b} in ${list.join(' ')}`);
}

test('the dump phases of every unit form a valid order', () => {
  const d = names(dumpPhases());
  before(d, 'parasite', 'memory');
  before(d, 'memory', 'write-files');
  before(d, 'files', 'unix-peers');
  before(d, 'unix-peers', 'write-files');
  before(d, 'pending-signals', 'write-core');
  assert.equal(d[d.length - 1], 'inventory', 'the inventory is written last');
});

test('the restore phases of every unit form a valid order', () => {
  const r = names(restorePhases().tree);
  before(r, 'close-inherited', 'address-space');
  before(r, 'address-space', 'pages');
  before(r, 'pages', 'protections');
  before(r, 'mm', 'files');
  before(r, 'files', 'files-cleanup');
  before(r, 'files', 'threads');
  before(r, 'threads', 'itimers');
  before(r, 'itimers', 'pending-signals');
});
