// Node modules that cost start-up time and that a small dump or restore does
// not use, loaded on first use instead of at the top of every module that may
// need them: child_process and net bring Node's stream and socket machinery
// (5-25 ms on a loaded 2-core machine), worker_threads 4-10 ms, zlib ~1.2 ms
// (its streams; only its crc32 is used, on pages files).
import type * as ChildProcessModule from 'node:child_process';
import type * as NetModule from 'node:net';
import type * as WorkerThreadsModule from 'node:worker_threads';
import type * as ZlibModule from 'node:zlib';

export function childProcess(): typeof ChildProcessModule {
  return require('node:child_process') as typeof ChildProcessModule;
}

export function net(): typeof NetModule {
  return require('node:net') as typeof NetModule;
}

export function workerThreads(): typeof WorkerThreadsModule {
  return require('node:worker_threads') as typeof WorkerThreadsModule;
}

export function zlib(): typeof ZlibModule {
  return require('node:zlib') as typeof ZlibModule;
}

/**
 * The environment for a node process of ours (the lazy heir, a daemonized
 * page server, the library's CLI runs): ours without NODE_EXTRA_CA_CERTS.
 * Node reads and parses that certificate file before running any code, ~28 ms
 * per start on this project's machines where it names the system bundle;
 * stasis makes no TLS connection, so the certificates are never used.
 * bin/stasis.js's #! line drops it for the command itself.
 */
export function nodeChildEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, ...extra };
  delete env.NODE_EXTRA_CA_CERTS;
  return env;
}
