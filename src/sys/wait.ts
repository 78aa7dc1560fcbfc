// wait4(2) with __WALL, decoded into a discriminated WaitStatus.
import { addressOf } from './native';
import { sys, sysTry } from './call';
import { WAIT, PTRACE_EVENT, SIG } from './abi';

export type WaitStatus =
  | { kind: 'exited'; pid: number; code: number }
  | { kind: 'signaled'; pid: number; signal: number; core: boolean }
  | { kind: 'stopped'; pid: number; signal: number } // signal-delivery or group stop (classic)
  | { kind: 'ptrace-event'; pid: number; event: number; signal: number } // status>>16 != 0
  | { kind: 'continued'; pid: number }
  | { kind: 'none' }; // WNOHANG and nothing to report

export function decodeStatus(pid: number, st: number): WaitStatus {
  if ((st & 0x7f) === 0) return { kind: 'exited', pid, code: (st >> 8) & 0xff };
  if (st === 0xffff) return { kind: 'continued', pid };
  if ((st & 0xff) === 0x7f) {
    const signal = (st >> 8) & 0xff;
    const event = (st >> 16) & 0xff;
    if (event !== 0) return { kind: 'ptrace-event', pid, event, signal };
    return { kind: 'stopped', pid, signal };
  }
  return { kind: 'signaled', pid, signal: st & 0x7f, core: (st & 0x80) !== 0 };
}

const statusBuf = Buffer.alloc(4);

/** wait4(pid, &status, __WALL | options). Throws on error (ECHILD...). */
export function wait4(pid: number, options = 0): WaitStatus {
  const got = sys('wait4', pid, addressOf(statusBuf), WAIT.__WALL | options, 0, 0, 0, `pid ${pid}`);
  if (got === 0) return { kind: 'none' };
  return decodeStatus(got, statusBuf.readInt32LE(0));
}

/** Like wait4 but returns -errno rather than throwing. */
export function tryWait4(pid: number, options = 0): WaitStatus | number {
  const got = sysTry('wait4', pid, addressOf(statusBuf), WAIT.__WALL | options);
  if (got < 0) return got;
  if (got === 0) return { kind: 'none' };
  return decodeStatus(got, statusBuf.readInt32LE(0));
}

export function isEventStop(ws: WaitStatus): boolean {
  return ws.kind === 'ptrace-event' && ws.event === PTRACE_EVENT.STOP;
}

/** A group stop as reported to a PTRACE_SEIZE tracer: event STOP with a stop signal. */
export function isGroupStop(ws: WaitStatus): boolean {
  return ws.kind === 'ptrace-event' && ws.event === PTRACE_EVENT.STOP &&
    [SIG.SIGSTOP, SIG.SIGTSTP, SIG.SIGTTIN, SIG.SIGTTOU].includes(ws.signal as 19);
}

export function describe(ws: WaitStatus): string {
  switch (ws.kind) {
    case 'exited': return `exited with ${ws.code}`;
    case 'signaled': return `killed by signal ${ws.signal}`;
    case 'stopped': return `stopped by signal ${ws.signal}`;
    case 'ptrace-event': return `ptrace event ${ws.event} (signal ${ws.signal})`;
    case 'continued': return 'continued';
    case 'none': return 'no change';
  }
}

const napWord = new Int32Array(new SharedArrayBuffer(4));

/** Block this thread for `ms` milliseconds (fractions too): the caller is synchronous and nothing else may run meanwhile. */
export function sleepSync(ms: number): void {
  Atomics.wait(napWord, 0, 0, ms);
}
