/**
 * Live snapshots against the real kernel: a running guest saved in rounds of its dirty
 * tracker (uffd-wp for the threads guest, KVM's dirty log where /dev/kvm is usable),
 * paused only for the last dirty pages and its state; the result restored like any other
 * snapshot, with every page checked by the oracle. Figures are read only for what they
 * must be by construction or by what the guest did (its own progress), never for how long
 * anything took.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { createGuest, defaultTracker, kvmAvailability } from '../src/guest/open.js';
import { checkGuest, type OracleResult } from '../src/guest/oracle.js';
import type { GuestBackendName, MigratableGuest, WorkerState } from '../src/guest/guest.js';
import { LIVE_DEFAULTS, type LivePolicy, type LiveSaveReport, saveSnapshotLive } from '../src/apps/snapshot/live-save.js';
import { clean, restore } from './helpers/restore.js';
import { openSnapshot } from '../src/apps/snapshot/open.js';
import { UnsupportedError, InvalidArgumentError } from '../src/errors.js';
import { main } from '../src/cli/run.js';
import { prepare } from './helpers/requirements.js';

const kvm = kvmAvailability();
const BACKENDS: { backend: GuestBackendName; skip: string | undefined }[] = [
  { backend: 'threads', skip: undefined },
  { backend: 'kvm', skip: kvm.usable ? undefined : `no usable KVM (${kvm.reason}); the threads guest is tested instead` },
];

const shm = mkdtempSync('/dev/shm/postcopy-test-live-');
after(() => rmSync(shm, { recursive: true, force: true }));

const MiB = 2 ** 20;

/** Where a worker is in its endless walk: pages it has written since it started. */
const progress = (s: WorkerState, pages: number) => (s.pass - 1n) * BigInt(pages) + BigInt(s.index);

interface Saved {
  report: LiveSaveReport;
  /** The workers' states before the save began, and at its pause. */
  start: WorkerState[];
  paused: WorkerState[];
  /** The saved states as bytes, taken at the pause (base64). */
  pausedSaved: string[];
  oracle: OracleResult;
  slices: { offset: number; pages: number }[];
}

/**
 * Runs a guest made with its backend's tracker, reads its progress (a pause of a moment,
 * before the save begins), lets it run again and saves it live; at the save's pause reads
 * its progress again and checks it with the oracle.
 */
async function liveSave(backend: GuestBackendName, dir: string, o: { source?: 'shmem' | 'anonymous' | 'shared_hugetlb'; size?: number; runMs?: number; policy?: LivePolicy } = {}): Promise<Saved> {
  const guest: MigratableGuest = createGuest(backend, { source: o.source ?? 'shmem', size: o.size ?? 32 * MiB, vcpus: 2, guestAddress: 4 * 2 ** 30 }, { tracking: defaultTracker(backend) });
  try {
    await guest.run();
    await sleep(o.runMs ?? 50);
    await guest.pause();
    const start = guest.states();
    await guest.run();
    let paused: WorkerState[] = [];
    let pausedSaved: string[] = [];
    let oracle: OracleResult | undefined;
    const report = await saveSnapshotLive(guest, dir, o.policy ?? LIVE_DEFAULTS, {
      atPause: () => {
        assert.equal(guest.running, false, 'the guest is paused when the save says so');
        paused = guest.states();
        pausedSaved = guest.save().map((s) => Buffer.from(s).toString('base64'));
        oracle = checkGuest(guest, paused);
      },
    });
    assert.ok(oracle, 'the save paused the guest once and called atPause');
    const slices = Array.from({ length: guest.shape.vcpus }, (_, i) => {
      const s = guest.slice(i);
      return { offset: s.guestAddress - guest.shape.guestAddress, pages: s.pages };
    });
    return { report, start, paused, pausedSaved, oracle, slices };
  } finally {
    guest.close();
  }
}


/** What every live save must show, whatever the machine's speed (`shortPause`: and a pause that wrote less than all of memory). */
function liveShape(s: Saved, shortPause = true): void {
  const r = s.report;
  const pages = r.size / 4096;
  const l = r.live;
  assert.equal(s.oracle.lostWrites, 0, 'the guest is clean at the pause');
  assert.equal(s.oracle.guestMismatches, 0);
  for (let i = 0; i < s.start.length; i++) {
    assert.ok(progress(s.paused[i]!, s.slices[i]!.pages) > progress(s.start[i]!, s.slices[i]!.pages), `worker ${i} made progress while its memory was written`);
  }
  assert.ok(l.rounds.length >= 1);
  assert.equal(l.rounds[0]!.units, r.units, 'round one covers every unit');
  assert.equal(l.rounds[0]!.pages, pages);
  for (const x of l.rounds) assert.equal(x.pages, x.units * (r.unit / 4096), 'a unit is its 4 KiB pages');
  assert.equal(l.pause.pages, l.pause.units * (r.unit / 4096));
  if (shortPause) assert.ok(l.pause.pages < pages, `the pause wrote ${l.pause.pages} of ${pages} pages: fewer than the memory has`);
  else assert.ok(l.pause.units <= r.units);
  assert.ok(['small-dirty-set', 'max-rounds', 'not-converging'].includes(l.reason));
  assert.ok(l.rounds.length <= l.policy.maxRounds);
  assert.equal(r.dataUnits + r.holeUnits, r.units);
  const m = openSnapshot(r.dir);
  try {
    assert.deepEqual(m.manifest.guest.states, s.pausedSaved, 'the snapshot holds the state taken at the pause');
    assert.equal(m.data.count(), r.dataUnits);
  } finally {
    m.close();
  }
}

for (const { backend, skip } of BACKENDS) {
  describe(`live snapshot of a ${backend} guest`, { skip }, () => {
    test('saved while it runs, paused only for the last dirty pages; restored on demand and from shared memory, clean', async () => {
      const dir = join(shm, `${backend}-live`);
      // KVM's guest dirties pages much faster than the threads guest under uffd-wp: let the
      // save throttle it if the rounds stop shrinking, so the pause is short on any machine.
      const saved = await liveSave(backend, dir, backend === 'kvm' ? { policy: { ...LIVE_DEFAULTS, autoConverge: true } } : {});
      assert.equal(saved.report.live.tracker, defaultTracker(backend));
      liveShape(saved);
      clean(await restore(dir, { mode: 'missing' }));
      const minor = await restore(dir, { mode: 'minor', consume: true });
      assert.equal(minor.mode, 'minor', 'and with MINOR faults over the file itself (consumed)');
      clean(minor);
    });
  });
}

test('pages the threads guest had not reached at the pause stay holes, every page it wrote is data', async (t) => {
  // Exact by construction: the threads guest only writes (a page reached holds pass ≥ 1),
  // so on shmem the units written are those it reached, and nothing else is read or written.
  const dir = join(shm, 'sparse');
  // Large enough that the workers are usually still in their first pass at the pause (the
  // check is exact either way; the diagnostic says how many holes it saw).
  const saved = await liveSave('threads', dir, { size: 256 * MiB, runMs: 20 });
  liveShape(saved);
  const m = openSnapshot(dir);
  try {
    for (let i = 0; i < saved.slices.length; i++) {
      const { offset, pages } = saved.slices[i]!;
      const s = saved.paused[i]!;
      const reached = s.pass > 1n ? pages : s.index;
      const first = offset / 4096;
      for (let p = 0; p < pages; p++) assert.equal(m.data.has(first + p), p < reached, `worker ${i} page ${p}: ${p < reached ? 'written, so data' : 'never reached, so a hole'}`);
    }
    t.diagnostic(`${saved.report.holeUnits} of ${saved.report.units} units left as holes; passes at the pause: ${saved.paused.map((s) => s.pass).join(', ')}`);
  } finally {
    m.close();
  }
  clean(await restore(dir, { mode: 'missing' }));
});

test('private anonymous memory saved live restores clean', async () => {
  const dir = join(shm, 'anon');
  const saved = await liveSave('threads', dir, { source: 'anonymous', size: 16 * MiB });
  liveShape(saved);
  clean(await restore(dir, { mode: 'missing' }));
});

const hugeSkip = prepare('shared_hugetlb', 2 * 16 * MiB);
test('hugetlb memory is saved live in whole 2 MiB units and restores clean', { skip: hugeSkip }, async () => {
  const dir = join(shm, 'huge');
  const saved = await liveSave('threads', dir, { source: 'shared_hugetlb', size: 16 * MiB });
  assert.equal(saved.report.unit, 2 * MiB);
  // No claim on the pause here: the workload writes every huge page on every pass, and
  // write protection costs it one fault per huge page, so each look finds every unit dirty
  // again and the pause writes them all (correct, just no shorter than a paused save).
  liveShape(saved, false);
  for (const x of saved.report.live.rounds) assert.equal(x.pages % 512, 0, 'whole huge pages');
  const r = await restore(dir, { mode: 'missing' });
  assert.equal(r.unit, 2 * MiB);
  clean(r);
});

describe('live save refusals', () => {
  test('a guest made without a dirty tracker: UnsupportedError naming the remedy, nothing written', async () => {
    const dir = join(shm, 'no-tracker');
    const guest = createGuest('threads', { source: 'shmem', size: 4 * MiB, vcpus: 2, guestAddress: 4 * 2 ** 30 });
    try {
      await guest.run();
      await assert.rejects(saveSnapshotLive(guest, dir), (e: unknown) => {
        assert.ok(e instanceof UnsupportedError);
        assert.equal(e.code, 'ERR_UNSUPPORTED');
        assert.match(e.detail, /dirty tracker/);
        assert.match(e.remedy ?? '', /tracking.*uffd-wp|saveSnapshot/);
        return true;
      });
      assert.ok(guest.running, 'the refused save left the guest running');
      assert.equal(existsSync(dir), false, 'nothing was written');
    } finally {
      await guest.pause();
      guest.close();
    }
  });

  test('a paused guest is refused (a paused save is saveSnapshot), nothing written', async () => {
    const dir = join(shm, 'paused');
    const guest = createGuest('threads', { source: 'shmem', size: 4 * MiB, vcpus: 2, guestAddress: 4 * 2 ** 30 }, { tracking: 'uffd-wp' });
    try {
      await assert.rejects(saveSnapshotLive(guest, dir), (e: unknown) => e instanceof InvalidArgumentError && /not running/.test(e.message));
      assert.equal(existsSync(dir), false);
    } finally {
      guest.close();
    }
  });
});

describe('postcopy snapshot save --live', () => {
  async function run(args: string[]): Promise<{ code: number; out: string; err: string }> {
    let out = '';
    let err = '';
    const code = await main(args, { out: (t) => (out += t), err: (t) => (err += t) });
    return { code, out, err };
  }

  test('--json reports the rounds, the pause and the total; the snapshot restores clean', async () => {
    const dir = join(shm, 'cli');
    const r = await run(['snapshot', 'save', '--out', dir, '--guest', 'threads', '--live', '-b', '16M', '--run', '50ms', '--max-rounds', '4', '--json']);
    assert.equal(r.code, 0, r.err);
    const j = JSON.parse(r.out);
    const pages = (2 * 16 * MiB) / 4096;
    const l = j.save.live;
    assert.equal(l.tracker, 'uffd-wp');
    assert.deepEqual(l.policy, { maxRounds: 4, maxStaleUnits: LIVE_DEFAULTS.maxStaleUnits, autoConverge: false });
    assert.ok(l.rounds.length >= 1 && l.rounds.length <= 4);
    assert.equal(l.rounds[0].pages, pages);
    for (const x of l.rounds) for (const k of ['round', 'units', 'pages', 'writtenUnits', 'ms']) assert.equal(typeof x[k], 'number', `rounds[].${k}`);
    for (const k of ['ms', 'stopMs', 'units', 'pages', 'writtenUnits']) assert.equal(typeof l.pause[k], 'number', `pause.${k}`);
    assert.ok(l.pause.pages < pages);
    for (const k of ['roundsMs', 'hashMs', 'totalMs']) assert.equal(typeof l[k], 'number', k);
    assert.equal(j.pausedMs, l.pause.ms, 'the run reports the live pause as its pause');
    assert.equal(j.before.lostWrites, 0);
    assert.equal(readdirSync(dir).sort().join(), 'datamap,memory,snapshot.json', 'no temporary file left');
    const back = await run(['snapshot', 'restore', dir, '--json']);
    assert.equal(back.code, 0, back.err);
    assert.equal(JSON.parse(back.out).oracle.checkedPages, pages);
    assert.equal(JSON.parse(back.out).oracle.lostWrites, 0);
  });

  test('the terminal shows the rounds and the pause', async () => {
    const r = await run(['snapshot', 'save', '--out', join(shm, 'cli-text'), '--guest', 'threads', '--live', '-b', '8M', '--run', '20ms', '--resume', '50ms']);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /^rounds: +\d+ while it ran/m);
    assert.match(r.out, /^pause: +[\d.]+ ms .* for the last \d+ dirty page\(s\) of 4096 and the state/m);
    assert.match(r.out, /after resuming 4096 page\(s\) checked, 0 lost write/);
  });

  test('the rounds\' flags without --live are a usage error', async () => {
    for (const flag of [['--max-rounds', '3'], ['--max-stale', '10'], ['--auto-converge']]) {
      const r = await run(['snapshot', 'save', '--demo', ...flag]);
      assert.equal(r.code, 2, r.err);
      assert.match(r.err, /give --live too/);
    }
  });
});
