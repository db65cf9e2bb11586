/**
 * `postcopy snapshot` as a user runs it: a working-set guest saved with --demo and restored
 * with --json (every figure there, the restorer's thread start reported apart from the time
 * to resume), record then prefetch through files, and the flags that make no sense refused
 * with exit 2 (usage) or 3 (cannot be done: MINOR without --consume) and a line naming the
 * remedy. Counts and exit codes only.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { postcopy } from './helpers/processes.js';

const work = mkdtempSync('/dev/shm/postcopy-test-snapshot-cli-');
after(() => rmSync(work, { recursive: true, force: true }));
const dir = join(work, 'snap');

async function run(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const c = postcopy(args);
  const code = await c.exited(120_000);
  return { code, out: c.stdout(), err: c.stderr() };
}

describe('postcopy snapshot from the command line', () => {
  test('save --working-set 10% --json: the guest is past its first pass and every unit holds data', async () => {
    const r = await run(['snapshot', 'save', '--out', dir, '--guest', 'threads', '-b', '8M', '--working-set', '10%', '--run', '50ms', '--json']);
    assert.equal(r.code, 0, r.err);
    const j = JSON.parse(r.out);
    assert.equal(j.workload, '10% of the pages in a scattered order after a first pass over all');
    assert.equal(j.save.dataUnits, j.save.units);
    assert.equal(j.before.lostWrites, 0);
  });

  test('restore --record, then --prefetch of that file: no fault; the threads were started before the open', async () => {
    const record = join(work, 'ws.json');
    const first = await run(['snapshot', 'restore', dir, '--record', record, '--json']);
    assert.equal(first.code, 0, first.err);
    const a = JSON.parse(first.out);
    assert.equal(a.mode, 'missing', 'MISSING is the default, even in tmpfs');
    assert.equal(a.faultedUnits, 2 * Math.round(2048 / 10), 'the working set of both workers (8 MiB = 2048 pages each), faulted once each');
    assert.equal(typeof a.prestartMs, 'number');
    assert.ok(Number.isFinite(a.timings.resumeMs) && Number.isFinite(a.nodeStartMs));
    assert.ok(existsSync(record));
    const second = await run(['snapshot', 'restore', dir, '--prefetch', record, '--json']);
    assert.equal(second.code, 0, second.err);
    const b = JSON.parse(second.out);
    assert.equal(b.faults.total, 0);
    assert.equal(b.placed.byPrefetch, a.faultedUnits);
    const cold = await run(['snapshot', 'restore', dir, '--no-prestart', '--json']);
    assert.equal(cold.code, 0, cold.err);
    assert.equal(JSON.parse(cold.out).prestartMs, null);
  });

  const refusals: [string, string[], number, RegExp][] = [
    ['a working set of 0%', ['save', '--demo', '--working-set', '0%'], 2, /--working-set takes a share of the memory from 0.1% to 100%/],
    ['a working set that is not a share', ['save', '--demo', '--working-set', 'half'], 2, /--working-set takes/],
    ['--consume with MISSING', ['restore', dir, '-u', 'MISSING', '--consume'], 2, /--consume is for -u MINOR/],
    ['--prefetch-after without a file', ['restore', dir, '--prefetch-after'], 2, /give the file/],
    ['MINOR without --consume', ['restore', dir, '-u', 'MINOR'], 3, /Add --consume .*or restore with -u MISSING/],
  ];
  for (const [what, args, code, message] of refusals) {
    test(`refused: ${what} (exit ${code})`, async () => {
      const r = await run(['snapshot', ...args]);
      assert.equal(r.code, code, r.err);
      assert.match(r.err, message);
    });
  }

  test('-u MINOR --consume runs the guest over the file; the next restore is refused as consumed (exit 3)', async () => {
    const r = await run(['snapshot', 'restore', dir, '-u', 'MINOR', '--consume', '--json']);
    assert.equal(r.code, 0, r.err);
    const j = JSON.parse(r.out);
    assert.equal(j.copiedUnits, 0);
    assert.equal(j.oracle.lostWrites, 0);
    const again = await run(['snapshot', 'restore', dir]);
    assert.equal(again.code, 3);
    assert.match(again.err, /no longer holds what was saved/);
  });
});
