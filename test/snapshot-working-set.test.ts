/**
 * The working-set workload and what a restore does with it, against the real kernel:
 * - the workload's definition (workload.ts) agrees with itself: a worker simulated with
 *   page()/passLength() leaves exactly the counters expected() predicts, at every step;
 * - the threads guest runs it: after its first pass only the working set moves on, in a
 *   scattered order, and the oracle sees a lost write inside the set;
 * - a snapshot of it restores on demand faulting only on the working set; a record of that
 *   restore prefetched before the guest runs leaves no fault at all; after it, some;
 * - threads started before the snapshot is opened (a restorer) run the guest;
 * - MINOR runs over the snapshot's own file and so needs --consume; the file then holds
 *   the guest's memory and a later restore refuses the snapshot.
 * Counts only, never how long anything took.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, openSync, readSync, closeSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { createGuest } from '../src/guest/open.js';
import { checkGuest } from '../src/guest/oracle.js';
import { SlicePlan, SWEEP, workingSet } from '../src/guest/workload.js';
import { saveSnapshot } from '../src/apps/snapshot/save.js';
import type { RestoreOptions } from '../src/apps/snapshot/restore.js';
import { clean, restore as restoreFrom } from './helpers/restore.js';
import { Restorer } from '../src/apps/snapshot/restorer.js';
import { mergeWorkingSet } from '../src/apps/snapshot/working-set.js';
import { openSnapshot } from '../src/apps/snapshot/open.js';
import { CONSUMED_FILE, MEMORY_FILE } from '../src/apps/snapshot/manifest.js';
import { SnapshotInvalidError } from '../src/apps/snapshot/errors.js';
import { UnsupportedError } from '../src/errors.js';

const MiB = 2 ** 20;
const shm = mkdtempSync('/dev/shm/postcopy-test-ws-');
after(() => rmSync(shm, { recursive: true, force: true }));

describe('the working-set workload, as defined', () => {
  test('a pass after the first touches permille‰ of the slice, each page once, never two neighbours in a row', () => {
    for (const [pages, permille] of [[40, 100], [4096, 100], [1000, 1000], [7, 1], [1, 500]] as const) {
      const plan = new SlicePlan(workingSet(permille), pages);
      const length = plan.passLength(2n);
      assert.equal(length, Math.max(1, Math.round((pages * permille) / 1000)));
      assert.equal(plan.passLength(1n), pages, 'the first pass writes every page');
      const seen = Array.from({ length }, (_, i) => plan.page(2n, i));
      assert.equal(new Set(seen).size, length, 'no page twice in a pass');
      assert.ok(seen.every((p) => p >= 0 && p < pages));
      if (pages > 2) for (let i = 1; i < length; i++) assert.notEqual(Math.abs(seen[i]! - seen[i - 1]!), 1, `accesses ${i - 1} and ${i} are neighbours`);
      assert.deepEqual(Array.from({ length }, (_, i) => plan.page(3n, i)), seen, 'every pass touches the same set in the same order');
    }
  });

  test('simulated step by step, the counters are always what expected() says, and endOfPass() marks one whole pass', () => {
    for (const workload of [SWEEP, workingSet(250)]) {
      const pages = 64;
      const plan = new SlicePlan(workload, pages);
      const memory = new Array<bigint>(pages).fill(0n);
      let pass = 1n;
      let index = 0;
      for (let step = 0; step < 400; step++) {
        const state = { pass, index };
        for (let p = 0; p < pages; p++) assert.equal(memory[p], plan.expected(state, p), `${workload.kind} step ${step} page ${p}`);
        const end = plan.endOfPass(state);
        // Run on until the watched page holds the value: that must be one whole pass later.
        const sim = [...memory];
        let [q, j, n] = [pass, index, 0];
        while (sim[end.page]! < end.value) {
          sim[plan.page(q, j)] = q;
          n++;
          if (++j === plan.passLength(q)) [q, j] = [q + 1n, 0];
        }
        const length = plan.passLength(pass);
        const whole = index === 0 || plan.passLength(pass + 1n) === length ? length : length - index + plan.passLength(pass + 1n);
        assert.equal(n, whole, `${workload.kind} step ${step} (pass ${pass}, access ${index}): the watch fires after one whole pass`);
        memory[plan.page(pass, index)] = pass;
        if (++index === plan.passLength(pass)) [pass, index] = [pass + 1n, 0];
      }
    }
  });

  test('shares outside 0.1%..100% are refused', () => {
    for (const bad of [0, 1001, 2.5, -1]) assert.throws(() => workingSet(bad), { code: 'ERR_INVALID_ARG' });
  });
});

describe('the threads guest running a working set', () => {
  test('after its first pass only the set moves on; the oracle is clean, and sees a write lost inside the set', async () => {
    const guest = createGuest('threads', { source: 'shmem', size: 8 * MiB, vcpus: 2, guestAddress: 4 * 2 ** 30, workload: workingSet(100) });
    try {
      for (;;) {
        await guest.run();
        await sleep(20);
        await guest.pause();
        if (guest.states().every((s) => s.pass >= 4n)) break;
      }
      const states = guest.states();
      assert.deepEqual(checkGuest(guest, states), { checkedPages: 2048, lostWrites: 0, first: [], guestMismatches: 0 });
      const view = guest.backing.alias!.bytes();
      const counters = new BigUint64Array(view.buffer, view.byteOffset, view.byteLength / 8);
      const slicePages = guest.slice(0).pages;
      for (let w = 0; w < 2; w++) {
        let moved = 0;
        for (let p = 0; p < slicePages; p++) if (counters[(w * slicePages + p) * 512]! > 1n) moved++;
        assert.equal(moved, guest.plan.setPages, `worker ${w}: only its working set went past the first pass`);
      }
      // Take back the last write of worker 0's set: the oracle must see it.
      const s = states[0]!;
      const victim = guest.plan.page(s.pass, s.index > 0 ? s.index - 1 : 0);
      counters[victim * 512] = counters[victim * 512]! - 1n;
      const r = checkGuest(guest, states);
      assert.equal(r.lostWrites, 1);
      assert.equal(r.first[0]!.guestAddress, 4 * 2 ** 30 + victim * 4096);
    } finally {
      if (guest.running) await guest.pause();
      guest.close();
    }
  });

  test('the kvm guest refuses a working set (its program sweeps), naming the threads guest, before touching /dev/kvm', () => {
    assert.throws(() => createGuest('kvm', { source: 'shmem', size: 8 * MiB, vcpus: 2, guestAddress: 4 * 2 ** 30, workload: workingSet(100) }), (e: unknown) => e instanceof UnsupportedError && /--guest threads/.test(e.remedy ?? ''));
  });
});

describe('restoring a working-set snapshot', () => {
  const dir = join(shm, 'ws');
  let setUnits = 0;
  const restore = (o: Partial<RestoreOptions> = {}) => restoreFrom(dir, o);

  test('saved past its first pass: every page holds data (the whole memory was written once)', async () => {
    const guest = createGuest('threads', { source: 'shmem', size: 16 * MiB, vcpus: 2, guestAddress: 4 * 2 ** 30, workload: workingSet(100) });
    try {
      for (;;) {
        await guest.run();
        await sleep(30);
        await guest.pause();
        if (guest.states().every((s) => s.pass >= 3n)) break;
      }
      const report = saveSnapshot(guest, dir);
      assert.equal(report.dataUnits, report.units);
      setUnits = guest.plan.setPages * 2;
    } finally {
      if (guest.running) await guest.pause();
      guest.close();
    }
  });

  test('on demand, the guest faults on its working set only; that record prefetched before it runs leaves no fault', async () => {
    const first = await restore({ mode: 'missing' });
    clean(first);
    assert.equal(first.workload, '10% of the pages in a scattered order after a first pass over all');
    assert.equal(first.faulted.length, setUnits, 'one first fault per page of the working set, none elsewhere');
    const s = openSnapshot(dir);
    const ws = mergeWorkingSet(undefined, s.manifest, first.faulted);
    s.close();
    const before = await restore({ mode: 'missing', prefetch: ws });
    clean(before);
    assert.equal(before.placed.byPrefetch, setUnits);
    assert.equal(before.faults.total, 0, 'every page the guest touched was there before it ran');
    const racing = await restore({ mode: 'missing', prefetch: ws, prefetchAfter: true });
    clean(racing);
    assert.equal(racing.placed.byPrefetch + racing.placed.byFault, setUnits, 'each page of the set placed once, by the prefetch or by a fault');
  });

  test('threads started before the snapshot is opened run the restored guest, over memory placed where they already view', async () => {
    const restorer = await Restorer.prestart(2);
    try {
      const r = await restore({ mode: 'missing', restorer });
      clean(r);
      assert.equal(restorer.guestWorkers.length, 0, 'both prestarted guest threads were taken');
      assert.equal(restorer.takePageServer(), undefined, 'the prestarted page server was taken');
      assert.equal(restorer.claim(4096), undefined, 'the reserved range the threads viewed in advance went to the guest\'s memory');
    } finally {
      await restorer.close();
    }
  });

  test('MINOR needs --consume; with it the guest runs over the file itself, nothing copied, and the snapshot is used up', async () => {
    await assert.rejects(restore({ mode: 'minor' }), (e: unknown) => e instanceof UnsupportedError && /--consume/.test(e.remedy ?? ''));
    assert.ok(!existsSync(join(dir, CONSUMED_FILE)), 'a refused restore marks nothing');
    const r = await restore({ mode: 'minor', consume: true });
    clean(r);
    assert.equal(r.copiedUnits, 0);
    assert.ok(r.faults.minor > 0 && r.faults.missing === 0);
    // The file holds what the guest wrote last: its counters are the oracle's expectation.
    const fd = openSync(join(dir, MEMORY_FILE), 'r');
    const word = Buffer.alloc(8);
    const plan = new SlicePlan(workingSet(100), r.size / 4096 / 2);
    try {
      for (let w = 0; w < 2; w++) {
        for (const i of [0, 1, plan.setPages - 1]) {
          const page = plan.page(r.states[w]!.pass, i);
          readSync(fd, word, 0, 8, (w * plan.pages + page) * 4096);
          assert.equal(word.readBigUInt64LE(), plan.expected(r.states[w]!, page), `worker ${w} page ${page} in the file`);
        }
      }
    } finally {
      closeSync(fd);
    }
    await assert.rejects(restore({ mode: 'missing' }), (e: unknown) => e instanceof SnapshotInvalidError && e.code === 'ERR_SNAPSHOT_CONSUMED');
  });
});
