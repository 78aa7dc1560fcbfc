#!/usr/bin/env -S -u NODE_EXTRA_CA_CERTS node
'use strict';
// The #! line drops NODE_EXTRA_CA_CERTS: Node parses the file it names before
// any code runs (~28 ms of a ~45 ms start on this project's machines, where
// it names the system's 140 certificates); stasis makes no TLS connection.
// (src/node-lazy.ts's nodeChildEnv does the same for node processes we start.)
//
// The command line. Start-up is most of a small dump's time: when the build
// made them (scripts/bundle.js), run dist/stasis.bundle.js, every module in
// one file, with V8's code cache of it; else, or if dist/src changed since
// (a tsc run without the bundle step), or with STASIS_NO_BUNDLE=1, the
// modules of dist/src one by one.
const fs = require('node:fs');
const path = require('node:path');

/** Set when the bundle ran: keeps what this command compiled in the code cache (warmCache). */
let warm;

/**
 * V8 compiles a function when it first runs, and the build's code cache
 * holds only what running every module's top level compiled: each command
 * sent its own code through the compiler on every run (a small dump: ~9 ms
 * of its ~57, 7 of them while the tree was frozen). So after a command's
 * first success with this build, the code cache is written again from this
 * process, with all it compiled; DIST/stasis.bundle.cache.warmed names the
 * build (the bundle's mtime and size) and lists the commands done. Only in a dist/ of our own that
 * nobody else may write: the code cache is code. Any failure: only slower.
 */
function warmCache(script, dist, file) {
  const command = process.argv.slice(2).find((a) => !a.startsWith('-'));
  if (!command || !/^[a-z-]+$/.test(command)) return;
  try {
    const st = fs.statSync(dist);
    if (st.uid !== process.geteuid() || (st.mode & 0o022) !== 0) return;
    const list = path.join(dist, 'stasis.bundle.cache.warmed');
    const b = fs.statSync(file);
    const build = `bundle ${b.mtimeMs} ${b.size}`;
    let done = [];
    try {
      const lines = fs.readFileSync(list, 'latin1').split('\n').filter(Boolean);
      if (lines[0] === build) done = lines.slice(1);
    } catch { /* none yet */ }
    if (done.includes(command) && !script.cachedDataRejected) return;
    const tmp = (what) => path.join(dist, `.stasis.${what}.${process.pid}`);
    fs.writeFileSync(tmp('cache'), script.createCachedData());
    fs.renameSync(tmp('cache'), path.join(dist, 'stasis.bundle.cache'));
    fs.writeFileSync(tmp('warmed'), [build, ...new Set([...done, command])].join('\n') + '\n');
    fs.renameSync(tmp('warmed'), list);
  } catch { /* only slower next time */ }
}

function loadMain() {
  const dist = path.join(__dirname, '..', 'dist');
  if (!process.env.STASIS_NO_BUNDLE) {
    const file = path.join(dist, 'stasis.bundle.js');
    let source;
    // ASCII (scripts/bundle.js says so in its first line): read as latin1, no UTF-8 decoding.
    try { source = fs.readFileSync(file, 'latin1'); } catch { source = undefined; }
    if (source !== undefined && !source.startsWith('// stasis bundle: ascii\n')) source = fs.readFileSync(file, 'utf8');
    if (source !== undefined) {
      let cachedData;
      try { cachedData = fs.readFileSync(path.join(dist, 'stasis.bundle.cache')); } catch { cachedData = undefined; }
      const { Script } = require('node:vm');
      const script = new Script(source, { filename: file, cachedData });
      const bundle = script.runInThisContext()(require('node:module'), path, path.join(dist, 'src'));
      if (bundle.current(fs, fs.statSync(file).mtimeMs)) {
        warm = () => warmCache(script, dist, file);
        return bundle.load('cli/main.js');
      }
    }
  }
  return require('../dist/src/cli/main.js');
}

// Exit at once when the command is done: Node's own way out, once the event
// loop is empty, tears the whole heap down first (~100 ms of a small dump's
// wall time on a loaded machine). Output is written synchronously by then
// (fs.writeSync; console to a file, pipe or terminal is synchronous on
// Linux) and nothing the command started is waited for (children unref'd).
loadMain().main(process.argv.slice(2)).then((code) => {
  if (code === 0 && warm) warm();
  process.exit(code);
});
