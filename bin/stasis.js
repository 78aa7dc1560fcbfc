#!/usr/bin/env node
'use strict';
// The command line. Start-up is most of a small dump's time: when the build
// made them (scripts/bundle.js), run dist/stasis.bundle.js, every module in
// one file, with V8's code cache of it; else, or if dist/src changed since
// (a tsc run without the bundle step), or with STASIS_NO_BUNDLE=1, the
// modules of dist/src one by one.
const fs = require('node:fs');
const path = require('node:path');

function loadMain() {
  const dist = path.join(__dirname, '..', 'dist');
  if (!process.env.STASIS_NO_BUNDLE) {
    const file = path.join(dist, 'stasis.bundle.js');
    let source;
    try { source = fs.readFileSync(file, 'utf8'); } catch { source = undefined; }
    if (source !== undefined) {
      let cachedData;
      try { cachedData = fs.readFileSync(path.join(dist, 'stasis.bundle.cache')); } catch { cachedData = undefined; }
      const { Script } = require('node:vm');
      const bundle = new Script(source, { filename: file, cachedData }).runInThisContext()(require('node:module'), path, path.join(dist, 'src'));
      if (bundle.current(fs, fs.statSync(file).mtimeMs)) return bundle.load('cli/main.js');
    }
  }
  return require('../dist/src/cli/main.js');
}

loadMain().main(process.argv.slice(2)).then((code) => { process.exitCode = code; });
