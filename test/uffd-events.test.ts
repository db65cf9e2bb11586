/**
 * Non-cooperative events: the kernel tells the userfaultfd's reader when the registered
 * memory is forked, moved, dropped or unmapped. The thread making the change sleeps until
 * a reader has read the event, so a worker-thread reader is running in every test.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { hva } from '../src/address.js';
import { Backing } from '../src/memory/backing.js';
import { Madvise, MapFlag, Mremap, Prot } from '../src/memory/constants.js';
import { native } from '../src/native/binding.js';
import { Userfaultfd } from '../src/uffd/userfaultfd.js';
import { Resolver } from './helpers/resolver.js';

const SIZE = 16 * 4096;

async function withReader(features: Parameters<typeof Userfaultfd.open>[0], body: (uffd: Userfaultfd, reader: Resolver, b: Backing) => Promise<void>) {
  const b = Backing.create('anonymous', SIZE);
  const uffd = Userfaultfd.open({ ...features, nonBlocking: true });
  try {
    uffd.register(b.primary.address, SIZE, ['MISSING']);
    const reader = await Resolver.start(uffd, { resolve: 'zeropage', start: b.primary.address, pageSize: 4096 });
    try {
      await body(uffd, reader, b);
    } finally {
      await reader.stop();
    }
  } finally {
    uffd.close();
    b.close();
  }
}

test('FORK: a child process forking the registered mm hands the reader a new userfaultfd', async () => {
  await withReader({ features: ['EVENT_FORK'] }, async (_uffd, reader) => {
    const pid = native.forkExit(0); // sleeps until the reader has read the FORK event
    assert.equal(native.waitpid(pid), 0);
    const [ev] = await reader.waitForEvents(1);
    assert.equal(ev?.type, 'fork');
    if (ev?.type !== 'fork') return;
    assert.ok(ev.uffd > 2, 'the child userfaultfd is a descriptor in this process');
    native.close(ev.uffd);
  });
});

test('REMAP: mremap of a registered range reports from, to and length', async () => {
  await withReader({ features: ['EVENT_REMAP'] }, async (_uffd, reader, b) => {
    const half = SIZE / 2;
    // A free place to move to: reserve it, then mremap over it with MREMAP_FIXED.
    const target = native.mmap(0, half, Prot.NONE, MapFlag.PRIVATE | MapFlag.ANONYMOUS, -1, 0);
    const moved = native.mremap(b.primary.address + half, half, half, Mremap.MAYMOVE | Mremap.FIXED, target);
    assert.equal(moved, target);
    const [ev] = await reader.waitForEvents(1);
    assert.deepEqual(ev, { type: 'remap', from: hva(b.primary.address + half), to: hva(target), length: half });
    native.munmap(target, half);
  });
});

test('REMOVE: MADV_DONTNEED over a registered range reports [start, end)', async () => {
  await withReader({ features: ['EVENT_REMOVE'] }, async (_uffd, reader, b) => {
    b.primary.advise(Madvise.DONTNEED, 4096, 3 * 4096);
    const [ev] = await reader.waitForEvents(1);
    assert.deepEqual(ev, { type: 'remove', start: hva(b.primary.address + 4096), end: hva(b.primary.address + 4 * 4096) });
  });
});

test('UNMAP: munmap of part of a registered range reports [start, end)', async () => {
  await withReader({ features: ['EVENT_UNMAP'] }, async (_uffd, reader, b) => {
    const start = b.primary.address + SIZE - 4 * 4096;
    native.munmap(start, 4 * 4096);
    const [ev] = await reader.waitForEvents(1);
    assert.deepEqual(ev, { type: 'unmap', start: hva(start), end: hva(start + 4 * 4096) });
    // Map the hole again so that closing the backing unmaps what it owns.
    native.mmap(start, 4 * 4096, Prot.READ | Prot.WRITE, MapFlag.PRIVATE | MapFlag.ANONYMOUS | MapFlag.FIXED, -1, 0);
  });
});

test('without the event features, the same changes produce no events', async () => {
  await withReader({}, async (_uffd, reader, b) => {
    b.primary.advise(Madvise.DONTNEED, 0, 4096);
    const pid = native.forkExit(0);
    assert.equal(native.waitpid(pid), 0);
    await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(reader.events, []);
  });
});
