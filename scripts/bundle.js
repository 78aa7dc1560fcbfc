#!/usr/bin/env node
// Start-up: one file instead of ~100, and V8's code cache for it.
//
// After tsc, this puts every module of dist/src/ (as tsc wrote it) into
// dist/stasis.bundle.js, each as the function Node would have wrapped it in,
// with a small require() that finds the others inside the bundle; anything
// else (node: modules, koffi, package.json) goes to Node's own require from
// where the module's file is. Then it loads every module once (their top
// levels only: constants, tables, the koffi binding) and saves V8's code
// cache of the bundle, compiled functions included, as dist/stasis.bundle.cache.
//
// The bundle is smaller than the modules: their comments are left out (the
// files of dist/src keep them), and it is ASCII only (other characters
// escaped as \uXXXX, which means the same in strings, templates and regular
// expressions): bin/stasis.js reads it as latin1, a one-byte string without
// UTF-8 decoding (1.3 MB: ~3.4 ms as UTF-8, ~1.1 ms as latin1 here). Its
// first line says so (ASCII_MARK); a bundle without it is read as UTF-8.
//
// bin/stasis.js runs the bundle with that cache when both are there and
// match (V8 rejects a cache made for other source or another Node), else the
// modules from dist/src/ as before. The cache is written here, at build time,
// next to the code: never at run time, never from a directory others write.
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const vm = require('node:vm');
const Module = require('node:module');

const ROOT = path.resolve(__dirname, '..');
const DIST = path.join(ROOT, 'dist');
const SRC = path.join(DIST, 'src');
const BUNDLE = path.join(DIST, 'stasis.bundle.js');
const CACHE = path.join(DIST, 'stasis.bundle.cache');
/** A worker thread's entry (NAME-worker.js) runs from its own file: not part of the bundle's modules. */
const isWorkerEntry = (rel) => rel.endsWith('-worker.js');
/** The bundle's first line (bin/stasis.js checks it before reading the rest as latin1). */
const ASCII_MARK = '// stasis bundle: ascii\n';

/** The module's code without its comments (TypeScript's printer: it knows where strings and regexps are). */
function withoutComments(ts, rel, code) {
  const sf = ts.createSourceFile(rel, code, ts.ScriptTarget.Latest, false, ts.ScriptKind.JS);
  return ts.createPrinter({ removeComments: true }).printFile(sf);
}

/** Characters past ASCII as \uXXXX (UTF-16 units: a pair for those past the BMP, as JS reads them). */
function asciiOnly(code) {
  return code.replace(/[^\x00-\x7f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

function list(dir) {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return list(p);
    return e.name.endsWith('.js') ? [p] : [];
  }).sort();
}

/**
 * The loader: `defs` maps a path relative to dist/src to [the module's
 * function, its requires of other bundled modules (resolved at build time)].
 */
function loader(defs, srcDir, Module, path) {
  const cache = new Map();
  // Node's own modules resolve alike from anywhere: one require for them all
  // (a createRequire per module was ~5-15 ms of a dump's start-up).
  let builtin;
  function load(rel) {
    const have = cache.get(rel);
    if (have) return have.exports;
    const [fn, deps] = defs[rel];
    // Not path.join/dirname: normalizing ~150 paths showed in start-up profiles.
    const filename = `${srcDir}/${rel}`;
    const dirname = filename.slice(0, filename.lastIndexOf('/'));
    const mod = { exports: {}, filename, id: filename, loaded: false };
    cache.set(rel, mod);
    let outside;
    const req = (id) => {
      const inside = deps[id];
      if (inside !== undefined) return load(inside);
      if (id.startsWith('node:')) return (builtin ??= Module.createRequire(`${srcDir}/`))(id);
      outside ??= Module.createRequire(filename);
      return outside(id);
    };
    fn.call(mod.exports, mod.exports, req, mod, filename, dirname);
    mod.loaded = true;
    return mod.exports;
  }
  /**
   * Every module's file is still the one bundled: same size, not written
   * after the bundle (a tsc run since leaves the bundle stale). Not the exact
   * mtime: npm pack sets every file's to one date.
   */
  function current(fs, bundleMtimeMs) {
    for (const [rel, [, , size]] of Object.entries(defs)) {
      let st;
      try { st = fs.statSync(`${srcDir}/${rel}`); } catch { return false; }
      if (st.size !== size || st.mtimeMs > bundleMtimeMs) return false;
    }
    return true;
  }
  return { load, current, names: Object.keys(defs) };
}

/** The bundled module a relative require of `from` names, if any. */
function resolveInside(rels, from, id) {
  const base = path.join(path.dirname(from), id);
  for (const c of [base, `${base}.js`, path.join(base, 'index.js')]) {
    const rel = path.relative(SRC, c);
    if (rels.has(rel)) return rel;
  }
  return undefined;
}

function build() {
  const files = list(SRC).filter((f) => !isWorkerEntry(path.relative(SRC, f)));
  const rels = new Set(files.map((f) => path.relative(SRC, f)));
  const ts = require('typescript');
  const parts = [`${ASCII_MARK}(function (Module, path, srcDir) {`, `${loader.toString()}`, 'const defs = {'];
  for (const f of files) {
    const rel = path.relative(SRC, f);
    // Source maps point at the real files: drop the comment (the bundle has none).
    const code = asciiOnly(withoutComments(ts, rel, fs.readFileSync(f, 'utf8').replace(/\n\/\/# sourceMappingURL=.*\s*$/, '\n')));
    const deps = {};
    for (const m of code.matchAll(/require\((["'])(\.[^"']*)\1\)/g)) {
      const inside = resolveInside(rels, f, m[2]);
      if (inside !== undefined) deps[m[2]] = inside;
    }
    const st = fs.statSync(f);
    parts.push(`${JSON.stringify(rel)}: [function (exports, require, module, __filename, __dirname) {\n${code}\n}, ${JSON.stringify(deps)}, ${st.size}],`);
  }
  parts.push('};', 'return loader(defs, srcDir, Module, path);', '})');
  const text = parts.join('\n');
  if (/[^\x00-\x7f]/.test(text)) throw new Error('bundle: a character past ASCII was left (the loader itself?)');
  fs.writeFileSync(BUNDLE, text);
  return files.length;
}

/** Compile the bundle, run every module's top level, and keep V8's code cache of it all. */
function makeCache() {
  const source = fs.readFileSync(BUNDLE, 'latin1');
  const script = new vm.Script(source, { filename: BUNDLE });
  const b = script.runInThisContext()(Module, path, SRC);
  for (const name of b.names) b.load(name);
  const data = script.createCachedData();
  fs.writeFileSync(CACHE, data);
  // A new build's cache is cold again: every command warms it anew (bin/stasis.js, warmCache).
  fs.rmSync(`${CACHE}.warmed`, { force: true });
  return data.length;
}

const n = build();
const size = makeCache();
console.log(`bundle: ${n} modules in ${path.relative(ROOT, BUNDLE)}, code cache ${(size / 1024).toFixed(0)} KiB`);
