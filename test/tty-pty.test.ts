// Terminals of the tree: a pty whose master the tree holds is carried whole —
// its index, both ends' termios, window size, packet mode and lock, the bytes
// queued in either direction (read back in the same pieces) — and a session
// whose controlling terminal it is gets it back before its children are
// forked, with its foreground group. A dump that leaves the tree running puts
// the queued bytes back. A session leader whose terminal's master is outside
// the tree is refused, and runs on.
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { initHarness, tmpDir, Fixture, runStasis, describeCli, reapZombies } from './harness';
import { crit } from './harness/images';
import { dumpKillRestore, dumpOk, assertOneLineError } from './net-helpers';

let root: string;
before(() => { initHarness(); root = tmpDir('ttypty'); });
after(() => fs.rmSync(root, { recursive: true, force: true }));

test('a pty pair: index, termios, window size, packet mode, lock and queued bytes both ways', async () => {
  const fx = await Fixture.start('ptypair', { extraFds: true });
  const dir = path.join(root, 'pair');
  try {
    const [a, b] = (fx.manifest.values.get('PTY') ?? []).map(Number);
    await dumpKillRestore(fx, dir);
    // criu's images: tty-info.img with each end (slave 2*index, master 2*index+1), tty-data.img with the bytes.
    const infos = JSON.parse(crit(['decode', '-i', path.join(dir, 'tty-info.img')])).entries as { id: number; type: string; pty: { index: number }; packet_mode: boolean; locked: boolean; winsize?: { ws_row: number; ws_col: number } }[];
    assert.deepEqual(infos.map((i) => [i.id, i.type, i.pty.index]).sort((x, y) => Number(x[0]) - Number(y[0])),
      [[2 * a, 'PTY', a], [2 * a + 1, 'PTY', a], [2 * b, 'PTY', b], [2 * b + 1, 'PTY', b]].sort((x, y) => Number(x[0]) - Number(y[0])));
    const slaveA = infos.find((i) => i.id === 2 * a)!, slaveB = infos.find((i) => i.id === 2 * b)!;
    assert.deepEqual([slaveA.winsize?.ws_row, slaveA.winsize?.ws_col, slaveA.packet_mode, slaveA.locked], [33, 111, false, false]);
    assert.deepEqual([slaveB.packet_mode, slaveB.locked], [true, true]);
    const data = JSON.parse(crit(['decode', '-i', path.join(dir, 'tty-data.img')])).entries as { tty_id: number; data: string }[];
    const bytes = (id: number) => Buffer.from(data.find((d) => d.tty_id === id)?.data ?? '', 'base64').toString('latin1');
    assert.equal(bytes(2 * a), 'line one\nline two\npartial');
    assert.equal(bytes(2 * a + 1), 'out-bytes\r\n');
    assert.equal(bytes(2 * b), '\x00\x7f\x03abc');
    const { log } = await fx.terminate();
    assert.match(log, /^PASS$/m, log);
  } finally {
    await fx.kill();
  }
});

test('restore refused before anything exists while the pty index is taken here; restored once it is free', async () => {
  const fx = await Fixture.start('ptypair', { extraFds: true });
  const dir = path.join(root, 'busy');
  const ours: number[] = [];
  try {
    const [a] = (fx.manifest.values.get('PTY') ?? []).map(Number);
    await dumpKillRestore(fx, dir, {
      between: () => {
        // Ptys of ours until one has index a (the kernel gives the lowest free one).
        while (!fs.existsSync(`/dev/pts/${a}`) && ours.length < 64) ours.push(fs.openSync('/dev/ptmx', fs.constants.O_RDWR | fs.constants.O_NOCTTY));
        const r = runStasis(['restore', '-d', '-D', dir]);
        assert.equal(r.status, 1, describeCli(r));
        assert.match(r.stderr.trim(), new RegExp(`^stasis: .*tty-info\\.img: pty index ${a} is in use on this host \\(/dev/pts/${a} exists\\)$`));
        assert.ok(!fs.existsSync(`/proc/${fx.pid}`), 'nothing restored');
        for (const fd of ours.splice(0)) fs.closeSync(fd);
      },
    });
    const { log } = await fx.terminate();
    assert.match(log, /^PASS$/m, log);
  } finally {
    for (const fd of ours) fs.closeSync(fd);
    await fx.kill();
  }
});

test('dumped and left running (-R): the queued bytes are back where they were', async () => {
  const fx = await Fixture.start('ptypair', { extraFds: true });
  try {
    dumpOk(fx.pid, path.join(root, 'running'), ['-R']);
    const { log } = await fx.terminate();
    assert.match(log, /^PASS$/m, log);
  } finally {
    await fx.kill();
  }
});

test('a session with a pty of the tree as controlling terminal: inherited by its child, foreground group, typed line', async () => {
  const fx = await Fixture.start('ptyctty', { extraFds: true });
  try {
    const c = Number(fx.manifest.values.get('C')?.[0]), g = Number(fx.manifest.values.get('G')?.[0]);
    assert.ok(c > 0 && g > 0, fx.log());
    await dumpKillRestore(fx, path.join(root, 'ctty'), { tree: [c, g] });
    const stat = (pid: number) => fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    // state ppid pgrp session tty_nr tpgid: C leads its session, G its group, the terminal's foreground.
    const [, , cpgrp, csid, ctty, ctpgid] = stat(c);
    const [, gppid, gpgrp, gsid, gtty] = stat(g);
    assert.deepEqual([Number(cpgrp), Number(csid), Number(ctpgid)], [c, c, g]);
    assert.deepEqual([Number(gppid), Number(gpgrp), Number(gsid), gtty], [c, g, c, ctty]);
    assert.notEqual(Number(ctty), 0, 'C has a controlling terminal');
    const { log } = await fx.terminate();
    assert.match(log, /^PASS$/m, log);
  } finally {
    await fx.kill();
    reapZombies();
  }
});

test('refused: a session leader whose terminal\'s master is outside the tree; it runs on', async () => {
  const fx = await Fixture.start('ptyctty', { extraFds: true });
  try {
    const c = Number(fx.manifest.values.get('C')?.[0]);
    const r = runStasis(['dump', '-t', String(c), '-D', path.join(root, 'outside')]);
    assertOneLineError(r, new RegExp(`^stasis: pid ${c} has the controlling terminal /dev/pts/\\d+, which is neither a pty held in the dumped tree nor a console open in it; dump a shell job with -j/--shell-job$`));
    assert.ok(!fs.existsSync(path.join(root, 'outside', 'inventory.img')), 'no checkpoint');
    const { log } = await fx.terminate();
    assert.match(log, /^PASS$/m, log);
  } finally {
    await fx.kill();
    reapZombies();
  }
});
