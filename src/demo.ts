// `stasis demo`: checkpoint a running program, kill it, bring it back, and
// show it carrying on from where it was.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { setChildSubreaper, tryWait4, tryKill, sleepSync, abi } from './sys';
import { dump } from './dump/dump';
import { restore } from './restore/restore';
import { readCheckpoint } from './show';
import { StasisError, ErrorCodes } from './errors';

const SAMPLE = `
import os, sys, time
log = open(sys.argv[1], 'a', buffering=1)
state = {'count': 0, 'primes': []}
n = 2
while True:
    if all(n % p for p in state['primes']):
        state['primes'].append(n)
    n += 1
    state['count'] += 1
    if state['count'] % 400 == 0:
        log.write('pid %d  step %6d  primes found %5d  largest %6d\\n' % (os.getpid(), state['count'], len(state['primes']), state['primes'][-1]))
        time.sleep(0.25)
`;

function follow(file: string, from: number, ms: number, prefix: string): number {
  const end = Date.now() + ms;
  let off = from;
  while (Date.now() < end) {
    const buf = fs.readFileSync(file);
    if (buf.length > off) {
      for (const line of buf.subarray(off).toString().split('\n')) if (line) console.log(`${prefix}${line}`);
      off = buf.length;
    }
    sleepSync(100);
  }
  return off;
}

function reap(pid: number, ms: number): string {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const r = tryWait4(pid, abi.WAIT.WNOHANG);
    if (typeof r === 'number') return 'gone';
    if (r.kind === 'exited') return `exited with ${r.code}`;
    if (r.kind === 'signaled') return `killed by signal ${r.signal}`;
    sleepSync(20);
  }
  return 'still running';
}

export function runDemo(): number {
  const python = ['/usr/bin/python3', '/usr/local/bin/python3'].find((p) => fs.existsSync(p));
  if (!python) throw new StasisError(ErrorCodes.UNSUPPORTED, 'the demo runs a small python3 program; install python3 first');
  setChildSubreaper(true);
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'stasis-demo-'));
  const script = path.join(work, 'sample.py');
  const log = path.join(work, 'sample.log');
  const dir = path.join(work, 'images');
  fs.writeFileSync(script, SAMPLE);
  fs.writeFileSync(log, '');
  // Started as a grandchild (re-parented to us): stdio on files only.
  const r = spawnSync('/bin/sh', ['-c', `cd "${work}" && "${python}" -S -u "${script}" "${log}" </dev/null >/dev/null 2>&1 & echo $!`], { encoding: 'utf8' });
  const pid = Number(r.stdout.trim());
  let alive = pid;
  try {
    console.log(`» started a sample program (pid ${pid}) that looks for primes and logs its progress:`);
    let off = follow(log, 0, 2500, '    ');
    console.log(`» checkpointing pid ${pid} into ${dir} ...`);
    const d = dump(pid, { dir, leaveRunning: false });
    const shown = readCheckpoint(dir).processes[0];
    console.log(`  ${d.pages} pages (${(d.bytes / 1048576).toFixed(1)} MiB), ${shown.vmas.length} mappings, ${shown.fds.length} fds, frozen ${d.frozenMs.toFixed(0)} ms; images: ${fs.readdirSync(dir).length} files`);
    reap(pid, 2000);
    console.log(`» the program was killed after the dump: ${fs.existsSync(`/proc/${pid}`) ? 'still there?!' : `pid ${pid} no longer exists`}`);
    alive = 0;
    off = follow(log, off, 1500, '    (nothing) ');
    console.log(`» restoring from ${dir} ...`);
    const res = restore({ dir, detach: true });
    alive = res.pid;
    console.log(`  restored pid ${res.pid} in ${res.ms.toFixed(0)} ms; it carries on where it was:`);
    follow(log, off, 2500, '    ');
    tryKill(res.pid, abi.SIG.SIGTERM);
    console.log(`» stopped it again (${reap(res.pid, 2000)}). Images are in ${dir}; try: stasis show ${dir}`);
    alive = 0;
    return 0;
  } finally {
    if (alive) { tryKill(alive, abi.SIG.SIGKILL); reap(alive, 2000); }
  }
}
