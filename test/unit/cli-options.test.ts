// Option parsing of the CLI, from the commands' declared tables.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { parseCommand, parseSize, normalizeArgs, formatHelp } from '../../src/cli/options';
import { COMMANDS } from '../../src/cli/commands';
import { StasisError, ErrorCodes } from '../../src/errors';

const cmd = (name: string) => COMMANDS.find((c) => c.name === name)!;
const usage = (f: () => unknown, re: RegExp) => assert.throws(f, (e) => e instanceof StasisError && e.code === ErrorCodes.USAGE && re.test(e.message));

test('sizes take K, M, G as criu', () => {
  assert.equal(parseSize('1M', 'x'), 1 << 20);
  assert.equal(parseSize('4096', 'x'), 4096);
  assert.equal(parseSize('2k', 'x'), 2048);
  assert.equal(parseSize('3G', 'x'), 3 * 1024 ** 3);
  usage(() => parseSize('1.5M', '--ghost-limit'), /invalid --ghost-limit '1.5M'/);
  usage(() => parseSize('-1', 'x'), /invalid/);
});

test('criu\'s -vN and -v spellings', () => {
  assert.deepEqual(normalizeArgs(['-v4', '-t', '1']), ['-t', '1', '--verbosity=4']);
  assert.deepEqual(normalizeArgs(['-v']), ['--verbosity=3']);
  assert.deepEqual(normalizeArgs(['-vv']), ['--verbosity=4']);
  assert.deepEqual(normalizeArgs(['-vvvvv']), ['--verbosity=4']);
});

test('dump options: short and long names, typed values', () => {
  const { values } = parseCommand(cmd('dump'), ['-t', '42', '-D', '/tmp/x', '-R', '--ghost-limit', '2M', '--tcp-established', '-o', 'dump.log', '-v4', '--json']);
  assert.equal(values.tree, 42);
  assert.equal(values['images-dir'], '/tmp/x');
  assert.equal(values['leave-running'], true);
  assert.equal(values['ghost-limit'], 2 << 20);
  assert.equal(values['tcp-established'], true);
  assert.equal(values['log-file'], 'dump.log');
  assert.equal(values.verbosity, 4);
  assert.equal(values.json, true);
});

test('criu\'s options a zdtm test passes that change nothing here are accepted: --manage-cgroups (bare too), --force-irmap, --irmap-scan-path, --file-locks', () => {
  const { values } = parseCommand(cmd('dump'), ['-t', '1', '-D', 'd', '--manage-cgroups', '--force-irmap', '--irmap-scan-path', '/zdtm/static', '--file-locks']);
  assert.equal(values['manage-cgroups'], 'soft');
  assert.equal(values['force-irmap'], true);
  assert.deepEqual(values['irmap-scan-path'], ['/zdtm/static']);
  assert.equal(values['file-locks'], true);
  assert.equal(parseCommand(cmd('restore'), ['-D', 'd', '--manage-cgroups=full']).values['manage-cgroups'], 'full');
});

test('bad options are usage errors that name the problem', () => {
  usage(() => parseCommand(cmd('dump'), ['--nope']), /dump: Unknown option '--nope'/);
  usage(() => parseCommand(cmd('dump'), ['-t', 'abc']), /invalid pid 'abc'/);
  usage(() => parseCommand(cmd('dump'), ['-t']), /dump: Option '-t, --tree <value>' argument missing/);
  usage(() => parseCommand(cmd('show'), ['a', 'b']), /unexpected argument 'b'/);
});

test('every command has a help listing its options', () => {
  for (const c of COMMANDS) {
    const h = formatHelp(c);
    assert.match(h, new RegExp(`^usage: stasis ${c.name}`));
    for (const o of c.options) assert.ok(h.includes(`--${o.long}`), `${c.name} --help lists --${o.long}`);
    assert.ok(h.includes('--help'));
  }
});
