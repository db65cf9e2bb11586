/**
 * The README's front door as a new user meets it: the Quick start's first command's CLI
 * path (`./bin/postcopy`, read from the README itself so the two cannot drift) runs the
 * checked-out build at once, for root and for an unprivileged user who has been given
 * userfaultfd access, with nothing rebuilt; the main job (`migrate --demo`, small) passes
 * the oracle as that user.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, readFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** The Quick start block's first command: `npm install && <cli> <args…>`. */
function quickStart(): { cli: string; args: string[] } {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const block = /## Quick start\s+```sh\n([^`]*)```/.exec(readme);
  assert.ok(block, 'the README has a Quick start block');
  const first = block[1]!.split('\n')[0]!.replace(/#.*$/, '').trim();
  const m = /^npm install && (\S+) (.+)$/.exec(first);
  assert.ok(m, `the first command installs, then runs the CLI: '${first}'`);
  return { cli: m[1]!, args: m[2]!.trim().split(/\s+/) };
}

function whyNoUser(): string | undefined {
  if (process.getuid?.() !== 0) return 'not root: a test user cannot be made (run the suite as root to check the unprivileged path)';
  for (const tool of ['/usr/sbin/useradd', '/usr/sbin/userdel', '/usr/sbin/runuser']) if (!existsSync(tool)) return `${tool} is missing (install passwd and util-linux)`;
  if (!existsSync('/dev/userfaultfd')) return 'no /dev/userfaultfd to give the test user (Linux 6.1+)';
  // The user must be able to reach the checkout: every directory above it searchable by others.
  for (let d = ROOT; d !== '/'; d = dirname(d)) if ((statSync(d).mode & 0o001) === 0) return `${d} is not searchable by other users`;
  return undefined;
}

describe('the front door', () => {
  const { cli, args } = quickStart();
  const bin = join(ROOT, cli);

  test(`the README's CLI path (${cli}) runs the checked-out build at once, as root`, () => {
    assert.ok(existsSync(bin), `${cli} exists in the checkout`);
    assert.deepEqual(args.slice(0, 2), ['migrate', '--demo'], 'the main job is the demo');
    const r = spawnSync(bin, ['--help'], { cwd: ROOT, encoding: 'utf8', timeout: 20_000 });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /migrate/);
    assert.doesNotMatch(r.stderr, /npm (notice|warn)|TS\d{4}/, 'nothing installed or compiled on the way');
  });

  const skip = whyNoUser();
  if (skip) console.log(`# skipping the unprivileged front door: ${skip}`);
  describe('as an unprivileged user with userfaultfd access', { skip }, () => {
    const user = `pcfront${process.pid % 100000}`;
    let mode = 0;
    before(() => {
      const add = spawnSync('/usr/sbin/useradd', ['-M', '-s', '/bin/sh', user], { encoding: 'utf8' });
      assert.equal(add.status, 0, add.stderr);
      // Access to /dev/userfaultfd for this test only (no setfacl here): put the mode back after.
      mode = statSync('/dev/userfaultfd').mode & 0o777;
      chmodSync('/dev/userfaultfd', 0o666);
    });
    after(() => {
      chmodSync('/dev/userfaultfd', mode);
      spawnSync('/usr/sbin/userdel', [user]);
    });
    const as = (argv: string[]) =>
      spawnSync('/usr/sbin/runuser', ['-u', user, '--', bin, ...argv], { cwd: '/tmp', encoding: 'utf8', timeout: 120_000, env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: '/tmp' } });

    test('--help and probe --json work, and probe sees userfaultfd as usable', () => {
      assert.equal(as(['--help']).status, 0);
      const p = as(['probe', '--json']);
      assert.equal(p.status, 0, p.stderr);
      const report = JSON.parse(p.stdout) as { privileges: { uid: number; userfaultfd: { status: string } } };
      assert.notEqual(report.privileges.uid, 0, 'it ran as the test user');
      assert.equal(report.privileges.userfaultfd.status, 'ok', JSON.stringify(report.privileges.userfaultfd));
    });

    test('the main job, small: migrates and not one write is lost', () => {
      const r = as([...args, '--json', '-b', '16M', '-v', '1', '--warmup', '100ms', '--run-after', '200ms', '--guest', 'threads']);
      assert.equal(r.status, 0, r.stderr);
      const { destination } = JSON.parse(r.stdout) as { destination: { oracle: { lostWrites: number; checkedPages: number } } };
      assert.equal(destination.oracle.checkedPages, (16 * 2 ** 20) / 4096);
      assert.equal(destination.oracle.lostWrites, 0);
    });
  });
});
