/**
 * The `postcopy` command as a user meets it: the built CLI run as a child process, its exit
 * codes, and what it prints on stdout and stderr.
 */
import assert from 'node:assert/strict';
import { spawnSync, type SpawnSyncOptions } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { ProbeReport } from '../src/probe/index.js';
import { walkFindings } from '../src/probe/finding.js';

const MAIN = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const VERSION = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;

function run(args: string[], options: SpawnSyncOptions = {}): { code: number | null; stdout: string; stderr: string } {
  const env = { ...process.env };
  delete env.POSTCOPY_DEBUG;
  const r = spawnSync(process.execPath, [MAIN, ...args], { encoding: 'utf8', env, timeout: 60_000, ...options });
  return { code: r.status, stdout: String(r.stdout), stderr: String(r.stderr) };
}

/** stderr must be exactly one line starting `postcopy: `, without a stack trace. */
function assertOneLine(stderr: string): void {
  const lines = stderr.trimEnd().split('\n');
  assert.equal(lines.length, 1, `one line expected, got:\n${stderr}`);
  assert.match(lines[0]!, /^postcopy: /);
  assert.doesNotMatch(stderr, /\n\s+at /);
}

describe('postcopy', () => {
  test('--help lists the commands and the exit codes, and exits 0', () => {
    const r = run(['--help']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^Usage: postcopy <command>/);
    assert.match(r.stdout, /^\s+probe\s+\S/m);
    for (const code of ['0', '1', '2', '3']) assert.match(r.stdout, new RegExp(`^\\s+${code}\\s+\\S`, 'm'), `exit code ${code} documented`);
  });

  test('--version prints the package version', () => {
    const r = run(['--version']);
    assert.equal(r.code, 0);
    assert.equal(r.stdout.trim(), VERSION);
  });

  test('no command: usage on stderr, exit 2', () => {
    const r = run([]);
    assert.equal(r.code, 2);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, /^Usage: postcopy/);
  });

  test('an unknown command: one line naming it and pointing to --help, exit 2', () => {
    const r = run(['frobnicate']);
    assert.equal(r.code, 2);
    assertOneLine(r.stderr);
    assert.match(r.stderr, /frobnicate/);
    assert.match(r.stderr, /--help/);
  });

  test('an unknown flag, global or of a command: one line, exit 2', () => {
    for (const args of [['--frobnicate'], ['probe', '--frobnicate']]) {
      const r = run(args);
      assert.equal(r.code, 2, args.join(' '));
      assertOneLine(r.stderr);
      assert.match(r.stderr, /--frobnicate/);
      assert.match(r.stderr, /--help/);
    }
  });

  test('a bad value and a stray argument are usage errors too', () => {
    for (const args of [['probe', '--source'], ['probe', '--source', 'floppy'], ['probe', 'extra']]) {
      const r = run(args);
      assert.equal(r.code, 2, args.join(' '));
      assertOneLine(r.stderr);
    }
  });

  test('POSTCOPY_DEBUG=1 adds the stack trace', () => {
    const r = run(['probe', '--source', 'floppy'], { env: { ...process.env, POSTCOPY_DEBUG: '1' } });
    assert.equal(r.code, 2);
    assert.match(r.stderr, /^postcopy: /);
    assert.match(r.stderr, /\n\s+at /);
  });
});

describe('postcopy probe', () => {
  test('--help describes the command and its options', () => {
    for (const args of [['probe', '--help'], ['probe', '-h'], ['help', 'probe']]) {
      const r = run(args);
      assert.equal(r.code, 0, args.join(' '));
      assert.match(r.stdout, /^Usage: postcopy probe/);
      assert.match(r.stdout, /--json/);
      assert.match(r.stdout, /--reserve-hugepages/);
    }
  });

  test('--json prints the report, in the report shape', () => {
    const r = run(['probe', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(r.stdout) as ProbeReport;
    assert.equal(report.schema, 1);
    assert.deepEqual(Object.keys(report), ['schema', 'kernel', 'privileges', 'userfaultfd', 'backings', 'kvm', 'tracking', 'hugepages', 'cpu']);
    assert.equal(typeof report.kernel.release, 'string');
    assert.equal(typeof report.privileges.root, 'boolean');
    assert.ok(['ok', 'missing'].includes(report.userfaultfd.usable.status));
    assert.ok('features' in report.userfaultfd && 'unprivilegedSysctl' in report.userfaultfd);
    assert.equal(report.backings.length, 8);
    for (const b of report.backings) {
      assert.equal(typeof b.source, 'string');
      assert.equal(typeof b.pageSize, 'number');
      assert.ok(b.create.status);
      assert.deepEqual(Object.keys(b.register), ['MISSING', 'MINOR', 'WP']);
    }
    assert.ok(report.kvm.device.status);
    assert.ok(Array.isArray(report.kvm.capabilities) && Array.isArray(report.kvm.unmerged));
    assert.equal(report.hugepages.pools.length, 2);
    assert.ok(Array.isArray(report.cpu.kvmModules));
    for (const [path, f] of walkFindings(report)) if (f.status !== 'ok') assert.ok(f.remedy, `${path} has a remedy`);
  });

  test('--source narrows the backing sources tried', () => {
    const r = run(['probe', '--json', '--source', 'shmem', '--source', 'anonymous']);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(
      (JSON.parse(r.stdout) as ProbeReport).backings.map((b) => b.source),
      ['shmem', 'anonymous'],
    );
  });

  test('the text report has every section, one line per item, and exits 0', () => {
    const r = run(['probe']);
    assert.equal(r.code, 0, r.stderr);
    for (const section of ['privileges', 'userfaultfd', 'backing sources', 'kvm', 'dirty tracking', 'hugepages', 'summary']) {
      assert.match(r.stdout, new RegExp(`^${section}`, 'm'), section);
    }
    for (const source of ['anonymous', 'shmem', 'shared_hugetlb', 'guest_memfd']) assert.match(r.stdout, new RegExp(`^\\s+${source}\\s`, 'm'));
    assert.match(r.stdout, /[✓✗–]/);
  });

  test('without privileges: the report carries remedies, and --strict exits 3 with them', (t) => {
    if (process.getuid?.() !== 0) return t.skip('needs root, to run the probe as user nobody');
    const nobody = { uid: 65534, gid: 65534 };
    const json = run(['probe', '--json'], nobody);
    assert.equal(json.code, 0, json.stderr);
    const report = JSON.parse(json.stdout) as ProbeReport;
    assert.equal(report.privileges.root, false);
    for (const [path, f] of walkFindings(report)) if (f.status !== 'ok') assert.ok(f.remedy, `${path} has a remedy`);

    const strict = run(['probe', '--strict'], nobody);
    if (report.userfaultfd.usable.status === 'ok' && report.kvm.vm.status === 'ok') {
      return t.skip('user nobody can use userfaultfd and KVM on this machine');
    }
    assert.equal(strict.code, 3, strict.stderr);
    const lines = strict.stderr.trimEnd().split('\n');
    assert.ok(lines.length >= 1);
    for (const line of lines) assert.match(line, /^postcopy: .+\. \S/, 'message, then remedy');
  });
});

test('the installed bin is executable, so `npx postcopy` runs it', () => {
  const bin = MAIN;
  assert.equal(statSync(bin).mode & 0o111, 0o111, `${bin} lacks the execute bits; the build script sets them`);
  assert.match(readFileSync(bin, 'utf8'), /^#!\/usr\/bin\/env node/);
});
