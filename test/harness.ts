// Test harness: builds the C fixtures, starts them as reparented grandchildren
// (never as Node's own children: libuv's reaper would steal their wait
// statuses and break ptrace), reaps them as a child subreaper, runs the CLI,
// and reads images back. Used by the tests and by bench/ (no node:test here).
//
// This file only re-exports the parts under harness/:
//   build    gcc for the fixtures, ROOT and the fixture paths, tmpDir
//   process  subreaper, reaping, polling, /proc readers (stat, status, fds, maps)
//   fixture  the Fixture class and the manifest it prints before READY
//   cli      running bin/stasis.js, restoreDetached, DUMP_STEPS
//   images   the byte pattern, dumped memory, tampering with images, crit
//   swrk     a criu swrk client (runc's and go-criu's side of bin/criu)
//   bundle   OCI bundles (busybox rootfs, runc spec) and runc helpers
export * from './harness/build';
export * from './harness/process';
export * from './harness/fixture';
export * from './harness/cli';
export * from './harness/images';
export * from './harness/swrk';
export * from './harness/bundle';
