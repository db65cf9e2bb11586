/**
 * Every resolving ioctl's happy path, on every backing source this machine supports:
 * the test's main thread touches every page of a registered region and sleeps in each
 * fault; a TypeScript loop in a worker thread resolves it. Afterwards every byte of the
 * region must be what the resolution put there.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, test } from 'node:test';
import { Backing, type BackingSourceName } from '../src/memory/backing.js';
import { MiB } from '../src/memory/constants.js';
import { Userfaultfd } from '../src/uffd/userfaultfd.js';
import { Resolver } from './helpers/resolver.js';
import { firstDifference, pattern, prepare, touchEachPage } from './helpers/requirements.js';

const SIZE = 8 * MiB;
const SOURCES: BackingSourceName[] = ['anonymous', 'anonymous_thp', 'anonymous_hugetlb', 'shmem', 'shared_hugetlb'];

for (const source of SOURCES) {
  describe(source, () => {
    // Two regions' worth: the region itself, and for shared sources nothing more is needed.
    const skip = prepare(source, SIZE);

    test('MISSING faults resolved by UFFDIO_COPY map exactly the source bytes', { skip }, async () => {
      const b = Backing.create(source, SIZE);
      const src = Backing.create('anonymous', SIZE);
      const uffd = Userfaultfd.open({ features: ['THREAD_ID'], nonBlocking: true });
      try {
        const expected = pattern(SIZE, b.info.pageSize);
        src.primary.bytes().set(expected);
        const reg = uffd.register(b.primary.address, SIZE, ['MISSING']);
        assert.ok(reg.allows('COPY'), 'COPY is allowed on a MISSING range');
        const resolver = await Resolver.start(uffd, { resolve: 'copy', start: b.primary.address, pageSize: b.info.pageSize, source: src.primary.address });
        const view = b.primary.bytes();
        touchEachPage(view);
        const report = await resolver.stop();
        assert.equal(report.faults, SIZE / b.info.pageSize, 'one fault per page');
        assert.equal(report.missing, report.faults, 'every fault is a MISSING fault');
        assert.equal(report.exists, 0);
        assert.equal(firstDifference(view, expected), -1, 'region holds the copied bytes');
        assert.deepEqual(report.threadIds.length, 1, 'THREAD_ID names the one touching thread');
      } finally {
        uffd.close();
        b.close();
        src.close();
      }
    });

    if (!source.includes('hugetlb')) {
      test('MISSING faults resolved by UFFDIO_ZEROPAGE read as zeros', { skip }, async () => {
        const b = Backing.create(source, SIZE);
        const uffd = Userfaultfd.open({ nonBlocking: true });
        try {
          uffd.register(b.primary.address, SIZE, ['MISSING']);
          const resolver = await Resolver.start(uffd, { resolve: 'zeropage', start: b.primary.address, pageSize: b.info.pageSize });
          const view = b.primary.bytes();
          touchEachPage(view);
          const report = await resolver.stop();
          assert.equal(report.faults, SIZE / b.info.pageSize);
          assert.equal(firstDifference(view, new Uint8Array(SIZE)), -1, 'every byte is zero');
        } finally {
          uffd.close();
          b.close();
        }
      });
    }

    if (source === 'shmem' || source === 'shared_hugetlb') {
      test('MINOR faults resolved by UFFDIO_CONTINUE map the bytes written through the alias', { skip }, async () => {
        const b = Backing.create(source, SIZE);
        const uffd = Userfaultfd.open({ features: [source === 'shmem' ? 'MINOR_SHMEM' : 'MINOR_HUGETLBFS'], nonBlocking: true });
        try {
          const expected = pattern(SIZE, b.info.pageSize, 0xa11a5);
          b.alias!.bytes().set(expected); // the pages now exist in the page cache, unmapped in the primary
          const reg = uffd.register(b.primary.address, SIZE, ['MINOR']);
          assert.ok(reg.allows('CONTINUE'), 'CONTINUE is allowed on a MINOR range');
          const resolver = await Resolver.start(uffd, { resolve: 'continue', start: b.primary.address, pageSize: b.info.pageSize });
          const view = b.primary.bytes();
          touchEachPage(view);
          const report = await resolver.stop();
          assert.equal(report.faults, SIZE / b.info.pageSize, 'one fault per page');
          assert.equal(report.minor, report.faults, 'every fault is a MINOR fault');
          assert.equal(firstDifference(view, expected), -1, 'guest mapping shows the alias bytes');
        } finally {
          uffd.close();
          b.close();
        }
      });

      test('after the primary mapping drops its PTEs, touches fault MINOR again and CONTINUE restores them', { skip }, async () => {
        const b = Backing.create(source, SIZE);
        const uffd = Userfaultfd.open({ features: [source === 'shmem' ? 'MINOR_SHMEM' : 'MINOR_HUGETLBFS'], nonBlocking: true });
        try {
          const expected = pattern(SIZE, b.info.pageSize, 0xbeef);
          b.primary.bytes().set(expected); // populated and mapped in the primary before registration
          uffd.register(b.primary.address, SIZE, ['MINOR']);
          b.unmapPrimary(0, SIZE); // the pages stay in the page cache
          const resolver = await Resolver.start(uffd, { resolve: 'continue', start: b.primary.address, pageSize: b.info.pageSize });
          const view = b.primary.bytes();
          touchEachPage(view);
          const report = await resolver.stop();
          assert.equal(report.minor, SIZE / b.info.pageSize);
          assert.equal(firstDifference(view, expected), -1);
        } finally {
          uffd.close();
          b.close();
        }
      });
    }
  });
}

describe('anonymous, other ioctls', () => {
  test('UFFDIO_COPY with DONTWAKE leaves the thread asleep until UFFDIO_WAKE', async () => {
    const b = Backing.create('anonymous', SIZE);
    const src = Backing.create('anonymous', SIZE);
    const uffd = Userfaultfd.open({ nonBlocking: true });
    try {
      const expected = pattern(SIZE, 4096, 7);
      src.primary.bytes().set(expected);
      uffd.register(b.primary.address, SIZE, ['MISSING']);
      const resolver = await Resolver.start(uffd, { resolve: 'copy', start: b.primary.address, pageSize: 4096, source: src.primary.address, wakeSeparately: true });
      const view = b.primary.bytes();
      touchEachPage(view);
      const report = await resolver.stop();
      assert.equal(report.faults, SIZE / 4096);
      assert.equal(firstDifference(view, expected), -1);
    } finally {
      uffd.close();
      b.close();
      src.close();
    }
  });

  test('UFFDIO_MOVE moves the source pages into the faulting range', async () => {
    const b = Backing.create('anonymous', SIZE);
    const src = Backing.create('anonymous', SIZE);
    const uffd = Userfaultfd.open({ features: ['MOVE'], nonBlocking: true });
    try {
      const expected = pattern(SIZE, 4096, 9);
      src.primary.bytes().set(expected);
      const reg = uffd.register(b.primary.address, SIZE, ['MISSING']);
      assert.ok(reg.allows('MOVE'));
      const resolver = await Resolver.start(uffd, { resolve: 'move', start: b.primary.address, pageSize: 4096, source: src.primary.address });
      const view = b.primary.bytes();
      touchEachPage(view);
      const report = await resolver.stop();
      assert.equal(report.faults, SIZE / 4096);
      assert.equal(firstDifference(view, expected), -1, 'destination holds the moved bytes');
      // The source pages are gone, not copied: reading them now maps fresh zero pages.
      assert.equal(firstDifference(src.primary.bytes(), new Uint8Array(SIZE)), -1, 'source is empty after the move');
    } finally {
      uffd.close();
      b.close();
      src.close();
    }
  });

  test('pages copied write-protected raise WP faults on write, resolved by UFFDIO_WRITEPROTECT', async () => {
    const size = 1 * MiB;
    const b = Backing.create('anonymous', size);
    const src = Backing.create('anonymous', size);
    const uffd = Userfaultfd.open({ features: ['PAGEFAULT_FLAG_WP'], nonBlocking: true });
    try {
      const expected = pattern(size, 4096, 3);
      src.primary.bytes().set(expected);
      const reg = uffd.register(b.primary.address, size, ['MISSING', 'WP']);
      assert.ok(reg.allows('WRITEPROTECT'));
      const resolver = await Resolver.start(uffd, { resolve: 'copy', start: b.primary.address, pageSize: 4096, source: src.primary.address, copyWriteProtected: true });
      const view = b.primary.bytes();
      touchEachPage(view, true); // missing fault, copied read-only, then the write faults again
      const report = await resolver.stop();
      assert.equal(report.missing, size / 4096);
      assert.equal(report.wp, size / 4096, 'each write to a protected page is a WP fault');
      assert.equal(firstDifference(view, expected), -1);
    } finally {
      uffd.close();
      b.close();
      src.close();
    }
  });

  test('UFFDIO_POISON: a touch of a poisoned page is SIGBUS, a second POISON answers EEXIST, COPY replaces it', () => {
    const b = Backing.create('anonymous', 4 * 4096);
    const src = Backing.create('anonymous', 4096);
    const uffd = Userfaultfd.open({ features: ['POISON'], nonBlocking: true });
    try {
      const reg = uffd.register(b.primary.address, b.size, ['MISSING']);
      assert.ok(reg.allows('POISON'));
      assert.deepEqual(uffd.poison(b.primary.address, 2 * 4096), { bytes: 2 * 4096, complete: true });
      assert.throws(() => uffd.poison(b.primary.address, 4096), { code: 'EEXIST', syscall: 'ioctl(UFFDIO_POISON)' });
      // A poison marker is "none, mostly" to UFFDIO_COPY: the copy installs a real page over it.
      assert.deepEqual(uffd.copy(b.primary.address, src.primary.address, 4096), { bytes: 4096, complete: true });
    } finally {
      uffd.close();
      b.close();
      src.close();
    }
    // Touching a poisoned page kills the toucher, so that part runs in a child process.
    const child = spawnSync(process.execPath, ['--input-type=module', '-e', `
      import { Backing, Userfaultfd } from ${JSON.stringify(new URL('../src/index.js', import.meta.url).href)};
      const b = Backing.create('anonymous', 4096);
      const uffd = Userfaultfd.open({ features: ['POISON'], nonBlocking: true });
      uffd.register(b.primary.address, 4096, ['MISSING']);
      uffd.poison(b.primary.address, 4096);
      b.primary.bytes()[0];
      process.exit(0);
    `]);
    assert.equal(child.signal, 'SIGBUS', `child ended with ${child.status}/${child.signal}: ${child.stderr}`);
  });
});
