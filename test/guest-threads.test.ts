/**
 * The threads guest: the migrate workload run by worker threads over real memory, with no
 * KVM. It must behave as the KVM guest does for everything a migration relies on: passes
 * written into every page, a pause between two accesses, a state that moves to another
 * guest and goes on there, lost writes caught by the guest itself and by the oracle, a
 * worker blocked in a userfaultfd fault until it is resolved, and its writes seen by the
 * uffd-wp tracker.
 */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, test } from 'node:test';
import { hva } from '../src/address.js';
import { countBits } from '../src/kvm/dirty-log.js';
import { checkGuest } from '../src/guest/oracle.js';
import { ThreadsGuest } from '../src/guest/threads/threads-guest.js';
import { THREADS_STATE_BYTES } from '../src/guest/threads/layout.js';
import { Backing } from '../src/memory/backing.js';
import { Userfaultfd } from '../src/uffd/userfaultfd.js';

const shape = (source: 'shmem' | 'anonymous', mib = 8, vcpus = 2) => ({ source, size: mib * 2 ** 20, vcpus, guestAddress: 2 ** 32 });
const progress = (s: { pass: bigint; index: number }, pages: number) => s.pass * BigInt(pages) + BigInt(s.index);

describe('the threads guest', () => {
  for (const source of ['shmem', 'anonymous'] as const) {
    test(`${source}: runs, pauses between two accesses, resumes; the oracle finds every page as the workers left it`, async () => {
      const g = ThreadsGuest.create(shape(source));
      try {
        await g.run();
        await sleep(150);
        await g.pause();
        assert.equal(g.running, false);
        const first = g.states();
        for (const s of first) {
          assert.ok(s.pass >= 1n, 'a pass was started');
          assert.equal(s.mismatches, 0, 'every counter held the last pass');
        }
        assert.equal(checkGuest(g, first).lostWrites, 0);
        // On a loaded machine a worker may get no CPU in a short run: give it more, a bounded number of times.
        const pages = g.slice(0).pages;
        const movedOn = () => g.states().every((s, i) => progress(s, pages) > progress(first[i]!, pages));
        for (let ms = 50; ms <= 3200; ms *= 2) {
          await g.run();
          await sleep(ms);
          await g.pause();
          if (movedOn()) break;
        }
        g.states().forEach((s, i) => assert.ok(progress(s, pages) > progress(first[i]!, pages), `worker ${i} went on from where it paused`));
        const r = checkGuest(g, g.states());
        assert.deepEqual([r.checkedPages, r.lostWrites, r.guestMismatches], [(8 * 2 ** 20) / 4096, 0, 0]);
      } finally {
        g.close();
      }
    });
  }

  test('its state moves to a second guest over a copy of the memory and goes on there; a lost write is caught by the guest and the oracle', async () => {
    const a = ThreadsGuest.create(shape('shmem'));
    const b = ThreadsGuest.create(shape('shmem'));
    try {
      await a.run();
      await sleep(100);
      await a.pause();
      const saved = a.save();
      assert.deepEqual(saved.map((s) => s.byteLength), [THREADS_STATE_BYTES, THREADS_STATE_BYTES]);
      assert.deepEqual(b.decodeState(saved[0]!), a.states()[0]);
      b.backing.alias!.bytes().set(a.backing.alias!.bytes());
      // Lose one write in the copy: a page behind worker 0's position goes back a pass.
      const s0 = a.states()[0]!;
      const victim = s0.index > 0 ? 0 : a.slice(0).pages - 1;
      const counters = new BigUint64Array(b.backing.alias!.bytes().buffer);
      counters[(victim * 4096) / 8] = counters[(victim * 4096) / 8]! - 1n;
      b.load(saved, { resetStall: true });
      assert.equal(checkGuest(b, b.states()).lostWrites, 1, 'the oracle sees the lost write before the guest runs');
      await b.run();
      await sleep(150);
      await b.pause();
      const after = b.states()[0]!;
      assert.ok(progress(after, b.slice(0).pages) > progress(s0, b.slice(0).pages), 'the moved worker went on');
      assert.equal(after.mismatches, 1, 'the guest counted the lost write on its next pass over it');
      assert.equal(after.firstMismatch, b.slice(0).guestAddress + victim * 4096);
    } finally {
      a.close();
      b.close();
    }
  });

  test('a state that is not a threads guest\'s, or out of its slice, is refused before anything runs', () => {
    const g = ThreadsGuest.create(shape('anonymous', 4, 1));
    try {
      const good = g.save()[0]!;
      assert.throws(() => g.load([new Uint8Array(10)]), /is 10 bytes, a threads guest's is 64/);
      assert.throws(() => g.load([good, good]), /2 thread states for 1 threads/);
      const foreign = new Uint8Array(good);
      foreign[0] = foreign[0]! ^ 0xff;
      assert.throws(() => g.load([foreign]), /not a threads guest's/);
      const beyond = new Uint8Array(good);
      new DataView(beyond.buffer).setBigUint64(16, 1n << 40n, true);
      assert.throws(() => g.load([beyond]), /is not in its pass of 1024 pages/);
    } finally {
      g.close();
    }
  });

  test('close while running is refused; twice is safe; kvm-dirty-log is not a threads guest\'s tracker', async () => {
    assert.throws(() => ThreadsGuest.create(shape('anonymous', 4, 1), { tracking: 'kvm-dirty-log' }), /no KVM dirty log/);
    const g = ThreadsGuest.create(shape('anonymous', 4, 1));
    await g.run();
    assert.throws(() => g.close(), /pause the guest first/);
    await g.pause();
    g.close();
    g.close();
  });

  test('a worker touching a page that is not there waits in userfaultfd until it is resolved, then goes on with nothing lost', async () => {
    const g = ThreadsGuest.create(shape('anonymous', 4, 1));
    const uffd = Userfaultfd.open({ nonBlocking: true });
    const zeros = Backing.create('anonymous', 4096);
    try {
      const base = g.backing.primary.address;
      uffd.register(hva(base), g.shape.size, ['MISSING']);
      await g.run();
      // The first touch of page 0 faults: nothing resolves it yet, so the worker cannot move.
      await sleep(100);
      const n = uffd.read();
      assert.ok(n >= 1, 'a fault arrived');
      const ev = uffd.event(0);
      assert.equal(ev.type, 'pagefault');
      assert.equal(ev.type === 'pagefault' && ev.address, base);
      // Resolve every page (one copy of zeros each); the worker runs through.
      for (let off = 0; off < g.shape.size; off += 4096) {
        try {
          uffd.copy(hva(base + off), hva(zeros.primary.address), 4096);
        } catch (e) {
          if ((e as { code?: string }).code !== 'EEXIST') throw e;
        }
      }
      await sleep(100);
      await g.pause();
      uffd.unregister(hva(base), g.shape.size);
      const s = g.states()[0]!;
      assert.ok(s.pass >= 2n, `the worker finished its first pass after the faults were resolved (pass ${s.pass})`);
      assert.equal(checkGuest(g, g.states()).lostWrites, 0);
      assert.ok(Number(s.maxGapTicks) / 1e6 >= 50, `the wait shows as a gap in the guest's own progress (${Number(s.maxGapTicks) / 1e6} ms)`);
    } finally {
      uffd.close();
      zeros.close();
      g.close();
    }
  });

  test('with uffd-wp tracking, the workers\' writes are collected; with them paused, nothing is', async () => {
    const g = ThreadsGuest.create(shape('shmem', 8, 2), { tracking: 'uffd-wp' });
    try {
      const t = g.tracker!;
      assert.equal(countBits(t.collect()), t.pages, 'the first collection is every page');
      assert.equal(countBits(t.collect()), 0, 'nothing written since');
      await g.run();
      await sleep(100);
      await g.pause();
      const dirty = countBits(t.collect());
      assert.ok(dirty > 0, `the workers' writes were seen (${dirty} pages)`);
      assert.equal(countBits(t.collect()), 0, 'paused: nothing more');
      assert.equal(checkGuest(g, g.states()).lostWrites, 0);
    } finally {
      g.close();
    }
  });
});
