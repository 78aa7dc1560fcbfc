// A tree in namespaces of its own: dumped and restored into new ones with the
// plain CLI; ids inside stay, the outer pid is reported (--pidfile, --json).
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Fixture, initHarness, runStasis, describeCli, tmpDir, waitFor, waitGone, reap, reapZombies } from './harness';
import { tryKill, abi } from '../src/sys';

let root: string;
before(() => { initHarness(); root = tmpDir('ns'); });
after(() => fs.rmSync(root, { recursive: true, force: true }));

function nspid(pid: number): string {
  return /^NSpid:\s*(.*)$/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))![1].trim();
}

async function roundTrip(kinds: string): Promise<void> {
  const fx = await Fixture.start('nsinit', { args: [kinds] });
  try {
    const init = Number(/^CHILD (\d+)$/m.exec(fx.log())![1]);
    await fx.waitLog(/^INIT_READY$/m);
    assert.match(nspid(init), new RegExp(`^${init}\\s+1$`), 'pid 1 in its own pid namespace');
    const dir = path.join(root, kinds.replace(/,/g, '-'));
    const d = runStasis(['dump', '-t', String(init), '-D', dir]);
    assert.equal(d.status, 0, describeCli(d));
    await waitGone([init]);
    const r = runStasis(['restore', '-D', dir, '-d', '--pidfile', 'init.pid', '--json']);
    assert.equal(r.status, 0, describeCli(r));
    const outer = Number(fs.readFileSync(path.join(dir, 'init.pid'), 'utf8'));
    assert.equal(JSON.parse(r.stdout).pid, outer, 'the JSON result names the outer pid');
    assert.match(nspid(outer), new RegExp(`^${outer}\\s+1$`), 'pid 1 again, in a new pid namespace');
    for (const k of kinds.split(',')) {
      const ns = (p: number | 'self') => fs.readlinkSync(`/proc/${p}/ns/${k === 'mnt' ? 'mnt' : k}`);
      assert.notEqual(ns(outer), ns('self'), `a ${k} namespace of its own`);
    }
    tryKill(outer, abi.SIG.SIGTERM);
    const st = await reap(outer, 10000);
    assert.deepEqual(st, { kind: 'exited', pid: outer, code: 0 }, fx.log());
    assert.match(fx.log(), /^PASS$/m);
  } finally {
    await fx.kill();
    reapZombies();
  }
}

test('pid + uts namespaces: pid 1 and the hostname survive dump → restore', () => roundTrip('pid,uts'));
