/**
 * The switchover policy as a table: what ends precopy, given a round's figures and what the
 * look after it found. Pure functions: the migrations that use them are in migrate.test.ts.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { estimate, stoppedConverging } from '../src/apps/migrate/source/convergence.js';
import { type SwitchoverPolicy, switchoverReason } from '../src/apps/migrate/source/precopy.js';

const policy: SwitchoverPolicy = { postcopyNow: false, postcopyAfterMs: undefined, maxRounds: 5, maxStalePages: 256 };
const PAGE = 4096;
/** A round that sent 10 000 pages (40 MB) in 100 ms: 400 MB/s. */
const round = { pages: 10_000, bytes: 10_000 * PAGE, ms: 100 };

test('the estimate: the link\'s bandwidth, the guest\'s dirty rate, and the time to send the set found now', () => {
  const e = estimate(round, 5000, PAGE, 100);
  assert.equal(e.bandwidthBytesPerMs, 409_600, '40 MB in 100 ms');
  assert.equal(e.dirtyPagesPerMs, 50, '5000 pages dirtied in the 100 ms since the last look');
  assert.equal(e.predictedMs, 50, 'half the round\'s pages take half its time');
});

for (const [what, dirty, p, expected] of [
  ['a set that shrank by half: go on', 5000, policy, undefined],
  ['a set that shrank by only 5%: not converging', 9500, policy, 'not-converging'],
  ['a set larger than the round sent: not converging', 12_000, policy, 'not-converging'],
  ['not converging, but told to keep going', 9500, { ...policy, keepPrecopyWhenNotConverging: true }, undefined],
  ['the set would take 50 ms to send, the limit is 60 ms: switch', 5000, { ...policy, downtimeLimitMs: 60 }, 'downtime-limit'],
  ['the set would take 50 ms to send, the limit is 40 ms: go on', 5000, { ...policy, downtimeLimitMs: 40 }, undefined],
  ['a set below --max-stale goes first', 200, { ...policy, downtimeLimitMs: 1000 }, 'small-dirty-set'],
] as const) {
  test(`round 3: ${what}`, () => {
    const e = estimate(round, dirty, PAGE, 100);
    assert.equal(switchoverReason(p, 3, dirty, 500, round, e), expected);
  });
}

test('round 1 always runs; after it, --postcopy-now; past --max-rounds, max-rounds', () => {
  assert.equal(switchoverReason({ ...policy, postcopyNow: true }, 1, 10, 0), undefined);
  assert.equal(switchoverReason({ ...policy, postcopyNow: true }, 2, 9000, 10, round, estimate(round, 9000, PAGE, 100)), 'postcopy-now');
  assert.equal(switchoverReason({ ...policy, keepPrecopyWhenNotConverging: true }, 6, 9000, 10, round, estimate(round, 9000, PAGE, 100)), 'max-rounds');
});

test('converging is judged against what the last round sent', () => {
  assert.equal(stoppedConverging(round, 8999), false, 'a 10% shrink is progress');
  assert.equal(stoppedConverging(round, 9001), true);
  assert.equal(stoppedConverging({ ...round, pages: 0 }, 5), false, 'an empty round tells nothing');
});
