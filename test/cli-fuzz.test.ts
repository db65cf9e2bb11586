/**
 * No input a person can type produces a stack trace or "internal error": each command's
 * flags given unknown names, empty strings, garbage, negative and absurdly large numbers.
 * Every refusal is one line with one `postcopy:` prefix and exits 2 (usage) or 3 (a
 * missing capability), never 1 with a stack. Nothing here runs long: every case is refused
 * before any guest or memory is made.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, test } from 'node:test';
import { MAIN } from './helpers/processes.js';

// Values no flag of these takes (a fraction such as 1.5 is a valid duration in ms, so not here).
const BAD_VALUES = ['', 'x', '-1', '0x', '1e999', '99999999999999999999999', ' ', 'NaN', '∞'];
const FLAGS: Record<string, { prefix: string[]; flags: string[] }> = {
  bench: { prefix: ['bench'], flags: ['-u', '-s', '-b', '-v', '-r', '-d', '-c', '-m'] },
  'migrate --demo': { prefix: ['migrate', '--demo'], flags: ['-s', '-u', '-b', '-v', '--guest', '--dirty-tracking', '--postcopy-after', '--max-rounds', '--max-stale', '--warmup', '--bandwidth', '--timeout', '--map-clean', '--run-after'] },
  'migrate receive': { prefix: ['migrate', 'receive'], flags: ['--listen', '--max-memory', '--timeout', '--guest'] },
  'migrate send': { prefix: ['migrate', 'send'], flags: ['--connect'] },
};

function run(args: string[]): { code: number | null; err: string } {
  const r = spawnSync(process.execPath, [MAIN, ...args], { encoding: 'utf8', timeout: 30_000, env: { ...process.env, POSTCOPY_DEBUG: '' } });
  return { code: r.status, err: r.stderr };
}

function assertRefused(args: string[], r: { code: number | null; err: string }): void {
  const what = `postcopy ${args.map((a) => JSON.stringify(a)).join(' ')}`;
  assert.ok(r.code === 2 || r.code === 3, `${what}: exit ${r.code}, not 2 or 3:\n${r.err}`);
  assert.doesNotMatch(r.err, /\n\s+at |internal error/, `${what}: a stack or an internal error:\n${r.err}`);
  const lines = r.err.trimEnd().split('\n');
  assert.equal(lines.length, 1, `${what}: one line:\n${r.err}`);
  assert.equal(lines[0]!.match(/postcopy:/g)?.length, 1, `${what}: one prefix: ${lines[0]}`);
}

describe('the command line refuses what it cannot use, in one line', () => {
  for (const [name, { prefix, flags }] of Object.entries(FLAGS)) {
    test(`${name}: every flag with every bad value`, () => {
      for (const flag of flags) {
        for (const value of BAD_VALUES) {
          const args = [...prefix, flag, value];
          assertRefused(args, run(args));
        }
      }
    });
  }
  test('unknown flags and commands', () => {
    for (const args of [['--bogus'], ['bench', '--bogus'], ['migrate', '--demo', '--bogus'], ['nonsense'], ['help', 'nonsense'], ['probe', 'extra', '--bogus']]) {
      const r = run(args);
      // `--bogus` alone prints help (a flag before a command); the rest are usage errors.
      if (args.length === 1 && args[0] === '--bogus') continue;
      assertRefused(args, r);
    }
  });
});
