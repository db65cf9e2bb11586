/**
 * Snapshots against the real kernel: a guest saved (sparse memory file, state beside it)
 * and restored through userfaultfd every way (MISSING on demand, MINOR from tmpfs with no
 * page copied (consuming the snapshot), eager, background, a recorded working set prefetched), with the oracle
 * clean after the guest ran on; the threads guest always, the kvm guest where /dev/kvm is
 * usable. Figures are read only for what they must be by construction (counts), never for
 * how long anything took.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { createGuest, kvmAvailability } from '../src/guest/open.js';
import { checkGuest } from '../src/guest/oracle.js';
import type { GuestBackendName } from '../src/guest/guest.js';
import { saveSnapshot } from '../src/apps/snapshot/save.js';
import { clean, restore } from './helpers/restore.js';
import { mergeWorkingSet, prefetchRuns, readWorkingSet, writeWorkingSet } from '../src/apps/snapshot/working-set.js';
import { openSnapshot } from '../src/apps/snapshot/open.js';
import { prepare } from './helpers/requirements.js';
import { execFileSync } from 'node:child_process';
import { saveMain } from '../src/apps/snapshot/main.js';
import { UnsupportedError } from '../src/errors.js';

const kvm = kvmAvailability();
const BACKENDS: { backend: GuestBackendName; skip: string | undefined }[] = [
  { backend: 'threads', skip: undefined },
  { backend: 'kvm', skip: kvm.usable ? undefined : `no usable KVM (${kvm.reason}); the threads guest is tested instead` },
];

const shm = mkdtempSync('/dev/shm/postcopy-test-snapshot-');
const disk = mkdtempSync(join(tmpdir(), 'postcopy-test-snapshot-'));
after(() => {
  rmSync(shm, { recursive: true, force: true });
  rmSync(disk, { recursive: true, force: true });
});

const MiB = 2 ** 20;

async function save(backend: GuestBackendName, dir: string, o: { source?: 'shmem' | 'anonymous' | 'shared_hugetlb'; size?: number; runMs?: number } = {}) {
  const guest = createGuest(backend, { source: o.source ?? 'shmem', size: o.size ?? 8 * MiB, vcpus: 2, guestAddress: 4 * 2 ** 30 });
  try {
    await guest.run();
    await sleep(o.runMs ?? 100);
    await guest.pause();
    const states = guest.states();
    assert.equal(checkGuest(guest, states).lostWrites, 0, 'the guest is clean before it is saved');
    return { states, report: saveSnapshot(guest, dir) };
  } finally {
    guest.close();
  }
}


for (const { backend, skip } of BACKENDS) {
  describe(`snapshot of a ${backend} guest`, { skip }, () => {
    const inShm = join(shm, backend);
    const onDisk = join(disk, backend);

    test('save writes a sparse memory file and a state file; MISSING on demand restores it, clean', async () => {
      const { report } = await save(backend, inShm);
      assert.equal(report.units, (8 * MiB) / 4096);
      assert.equal(report.dataUnits + report.holeUnits, report.units);
      await save(backend, onDisk);
      const r = await restore(onDisk);
      assert.equal(r.mode, 'missing', 'a file on a disk is restored with MISSING faults by default');
      clean(r);
      assert.ok(r.faults.missing > 0 && r.faults.minor === 0);
      assert.equal(r.placed.byFault + r.placed.afterPause, r.units, 'every unit placed once, by a fault or by the fill for the check');
      assert.equal(r.bytesRead, r.copiedUnits * r.unit);
      assert.equal(r.faulted.length, r.placed.byFault, 'every on-demand placement was a recorded first fault');
    });

    test('MINOR from tmpfs with --consume: the guest runs over the file itself, not one page copied; the snapshot is then refused', async () => {
      const kept = await restore(inShm);
      assert.equal(kept.mode, 'missing', 'without --consume a snapshot in tmpfs is restored with MISSING faults and kept');
      clean(kept);
      const r = await restore(inShm, { mode: 'minor', consume: true });
      assert.equal(r.mode, 'minor');
      clean(r);
      assert.equal(r.copiedUnits, 0, 'no page copied');
      assert.equal(r.bytesRead, 0);
      assert.ok(r.faults.minor > 0 && r.faults.missing === 0);
      assert.equal(r.continuedUnits, r.placed.byFault + r.placed.afterPause);
      await assert.rejects(restore(inShm), { code: 'ERR_SNAPSHOT_CONSUMED' });
    });

    test('eager places every unit before the guest runs: no fault at all', async () => {
      const r = await restore(onDisk, { eager: true });
      clean(r);
      assert.equal(r.faults.total, 0);
      assert.equal(r.placed.eager, r.units);
    });

    test('background fills behind the guest; every unit placed once', async () => {
      const r = await restore(onDisk, { mode: 'missing', background: true });
      clean(r);
      assert.equal(r.placed.byFault + r.placed.byBackground + r.placed.afterPause, r.units);
    });

    test('record, merge a second run, prefetch: the recorded pages are placed in runs and faults fall', async () => {
      const snap = openSnapshot(onDisk);
      const manifest = snap.manifest;
      snap.close();
      const file = join(disk, `${backend}-ws.json`);
      const first = await restore(onDisk, { mode: 'missing' });
      writeWorkingSet(file, mergeWorkingSet(undefined, manifest, first.faulted));
      const second = await restore(onDisk, { mode: 'missing' });
      writeWorkingSet(file, mergeWorkingSet(readWorkingSet(file, manifest), manifest, second.faulted));
      const ws = readWorkingSet(file, manifest);
      assert.equal(ws.runs, 2);
      assert.equal(ws.units.length, new Set([...first.faulted, ...second.faulted]).size, 'the union of both runs');
      const both = new Set(first.faulted.filter((u) => second.faulted.includes(u)));
      ws.units.forEach((u, i) => assert.equal(ws.counts[i], both.has(u) ? 2 : 1));
      const runs = prefetchRuns(ws);
      assert.ok(runs.length < ws.units.length / 4, `consecutive units go in one ioctl (${runs.length} runs for ${ws.units.length} units)`);
      const r = await restore(onDisk, { mode: 'missing', prefetch: ws });
      clean(r);
      assert.equal(r.prefetchUnits, ws.units.length);
      assert.ok(r.placed.byPrefetch > 0);
      assert.equal(r.placed.byFault + r.placed.byPrefetch + r.placed.afterPause, r.units);
      assert.ok(r.faults.total < first.faults.total, `fewer faults with the working set prefetched (${r.faults.total} against ${first.faults.total})`);
    });
  });
}

describe('what a save writes', () => {
  test('a guest paused right after it started: only the pages it wrote hold data, the rest are holes taking no space', async () => {
    const dir = join(shm, 'fresh');
    const guest = createGuest('threads', { source: 'shmem', size: 64 * MiB, vcpus: 2, guestAddress: 4 * 2 ** 30 });
    try {
      await guest.run();
      await guest.pause();
      const states = guest.states();
      const written = states.reduce((n, s, i) => n + (s.pass > 1n ? guest.slice(i).pages : s.index), 0);
      const r = saveSnapshot(guest, dir);
      assert.equal(r.dataUnits, written, 'a unit holds data exactly when the guest wrote its counter');
      assert.equal(r.allocatedBytes, r.dataUnits * 4096, 'holes take no space in tmpfs');
    } finally {
      guest.close();
    }
    const r = await restore(dir, { mode: 'missing' });
    clean(r);
    assert.ok(r.zeroUnits > 0 || r.dataUnits === r.units, 'holes are mapped as zero pages');
  });

  test('private anonymous memory: pages never touched read as zeros and are saved as holes', async () => {
    const dir = join(disk, 'anon');
    const { report } = await save('threads', dir, { source: 'anonymous', runMs: 50 });
    assert.equal(report.dataUnits + report.holeUnits, report.units);
    clean(await restore(dir));
  });

  const hugeSkip = prepare('shared_hugetlb', 2 * 16 * MiB);
  test('hugetlb memory is saved and restored in whole 2 MiB pages', { skip: hugeSkip }, async () => {
    const dir = join(disk, 'huge');
    const { report } = await save('threads', dir, { source: 'shared_hugetlb', size: 16 * MiB });
    assert.equal(report.unit, 2 * MiB);
    const r = await restore(dir, { mode: 'missing' });
    assert.equal(r.unit, 2 * MiB);
    clean(r);
    assert.ok(existsSync(join(dir, 'memory')));
  });

  test('hugetlb memory saved into tmpfs restores with MINOR faults over the file, a whole huge page each, nothing copied', { skip: hugeSkip }, async () => {
    const dir = join(shm, 'huge-minor');
    await save('threads', dir, { source: 'shared_hugetlb', size: 16 * MiB });
    const r = await restore(dir, { mode: 'minor', consume: true });
    clean(r);
    assert.equal(r.unit, 2 * MiB);
    assert.equal(r.copiedUnits, 0);
    assert.ok(r.faults.minor > 0 && r.faults.minor <= r.units, `at most one fault per huge page (${r.faults.minor} for ${r.units})`);
  });

  const mountSkip = process.getuid?.() === 0 ? undefined : 'mounting hugetlbfs needs root: run the tests as root to check this refusal';
  test('save refuses a directory on hugetlbfs before a guest exists (no write(2) there for the state file)', { skip: mountSkip }, async () => {
    const mnt = mkdtempSync(join(tmpdir(), 'postcopy-test-hugetlbfs-'));
    execFileSync('mount', ['-t', 'hugetlbfs', 'none', mnt]);
    try {
      await assert.rejects(saveMain({ out: join(mnt, 'snap'), guest: 'threads', source: 'shared_hugetlb', bytesPerVcpu: 2 * MiB, vcpus: 1, runMs: 10, resumeMs: 0 }, { out: () => undefined, err: () => undefined }, true), (e: unknown) => e instanceof UnsupportedError && /tmpfs/.test(e.remedy ?? ''));
      assert.ok(!existsSync(join(mnt, 'snap')), 'nothing made');
    } finally {
      execFileSync('umount', [mnt]);
      rmSync(mnt, { recursive: true, force: true });
    }
  });
});
