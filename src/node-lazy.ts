// Node modules that cost start-up time and that a small dump or restore does
// not use, loaded on first use instead of at the top of every module that may
// need them: child_process and net bring Node's stream and socket machinery
// (5-25 ms on a loaded 2-core machine), worker_threads 4-10 ms.
import type * as ChildProcessModule from 'node:child_process';
import type * as NetModule from 'node:net';
import type * as WorkerThreadsModule from 'node:worker_threads';

export function childProcess(): typeof ChildProcessModule {
  return require('node:child_process') as typeof ChildProcessModule;
}

export function net(): typeof NetModule {
  return require('node:net') as typeof NetModule;
}

export function workerThreads(): typeof WorkerThreadsModule {
  return require('node:worker_threads') as typeof WorkerThreadsModule;
}
