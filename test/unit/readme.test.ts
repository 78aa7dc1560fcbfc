// The README's library example compiles under tsc --strict against the
// package's own declarations, as a user's program would.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';

const ROOT = path.resolve(__dirname, '..', '..', '..');

test('the README example compiles with tsc --strict', () => {
  const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
  const m = /## As a library\s+```ts\n([\s\S]*?)```/.exec(readme);
  assert.ok(m, 'README has a ts block under "As a library"');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stasis-readme-'));
  try {
    fs.writeFileSync(path.join(dir, 'example.ts'), m[1] + '\nvoid migrateLocally;\n');
    fs.writeFileSync(path.join(dir, 'tsconfig.json'), JSON.stringify({
      compilerOptions: {
        strict: true, noEmit: true, target: 'ES2022', module: 'commonjs', moduleResolution: 'node', types: ['node'],
        typeRoots: [path.join(ROOT, 'node_modules', '@types')], baseUrl: '.', paths: { stasis: [path.join(ROOT, 'dist', 'src', 'index.d.ts')] },
        skipLibCheck: true,
      },
      files: ['example.ts'],
    }));
    const tsc = path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
    const r = spawnSync(process.execPath, [tsc, '-p', dir], { encoding: 'utf8' });
    assert.equal(r.status, 0, `tsc: ${r.stdout}${r.stderr}`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
