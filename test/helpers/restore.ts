/** What the snapshot tests share: a restore with test defaults, and "the oracle is clean". */
import assert from 'node:assert/strict';
import { restoreSnapshot, type RestoreOptions, type RestoreReport } from '../../src/apps/snapshot/restore.js';

/** Restores `dir` verified, the guest running on 20 ms after its workload, within a minute. */
export const restore = (dir: string, o: Partial<RestoreOptions> = {}): Promise<RestoreReport> =>
  restoreSnapshot({ dir, eager: false, background: false, verify: true, runAfterMs: 20, timeoutMs: 60_000, ...o });

/** Every page checked, none lost, the guest saw no mismatch, and each worker made a whole pass since resuming. */
export function clean(r: RestoreReport): void {
  assert.equal(r.oracle.lostWrites, 0, `lost writes: ${JSON.stringify(r.oracle.first)}`);
  assert.equal(r.oracle.guestMismatches, 0, 'the guest saw no mismatch');
  assert.equal(r.oracle.checkedPages, r.size / 4096, 'every page checked');
  assert.ok(r.states.every((s) => s.pass >= 2n), 'each worker went on through one whole pass at least');
}
