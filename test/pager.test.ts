/**
 * The pager's fault readers (worker threads in epoll) serving real faults: every page
 * faults once, is resolved once, and holds the intended bytes.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Backing } from '../src/memory/backing.js';
import { MiB } from '../src/memory/constants.js';
import { Pager } from '../src/pager/pager.js';
import { Userfaultfd } from '../src/uffd/userfaultfd.js';
import { firstDifference, pattern, touchEachPage } from './helpers/requirements.js';

const SIZE = 8 * MiB;
const PAGES = SIZE / 4096;

for (const readers of [1, 2]) {
  test(`MISSING on anonymous, ${readers} reader(s): each page copied once, bytes exact`, async () => {
    const b = Backing.create('anonymous', SIZE);
    const src = Backing.create('anonymous', SIZE);
    const uffd = Userfaultfd.open({ nonBlocking: true });
    try {
      const expected = pattern(SIZE, 4096, readers);
      src.primary.bytes().set(expected);
      uffd.register(b.primary.address, SIZE, ['MISSING']);
      const pager = await Pager.start({
        uffds: [uffd],
        readersPerUffd: readers,
        pageSize: 4096,
        resolution: { kind: 'copy', regionStart: b.primary.address, source: src.primary.address },
      });
      const view = b.primary.bytes();
      touchEachPage(view);
      const stats = await pager.stop();
      assert.equal(stats.faults, PAGES);
      assert.equal(stats.missing, PAGES);
      assert.equal(stats.exists, 0, 'one toucher: no page is resolved twice');
      assert.equal(stats.readers.length, readers);
      assert.equal(stats.service.count, PAGES);
      assert.ok(stats.service.quantile(0.5) > 0 && stats.service.quantile(0.99) >= stats.service.quantile(0.5));
      assert.equal(firstDifference(view, expected), -1);
    } finally {
      uffd.close();
      b.close();
      src.close();
    }
  });
}

test('MINOR on shmem, 2 readers: CONTINUE maps what the alias holds', async () => {
  const b = Backing.create('shmem', SIZE);
  const uffd = Userfaultfd.open({ features: ['MINOR_SHMEM'], nonBlocking: true });
  try {
    const expected = pattern(SIZE, 4096, 77);
    b.alias!.bytes().set(expected);
    uffd.register(b.primary.address, SIZE, ['MINOR']);
    const pager = await Pager.start({ uffds: [uffd], readersPerUffd: 2, pageSize: 4096, resolution: { kind: 'continue' } });
    const view = b.primary.bytes();
    touchEachPage(view, true);
    const stats = await pager.stop();
    assert.equal(stats.minor, PAGES);
    assert.equal(firstDifference(view, expected), -1);
  } finally {
    uffd.close();
    b.close();
  }
});

test('a blocking userfaultfd is refused: readers wait in epoll', async () => {
  const uffd = Userfaultfd.open();
  try {
    await assert.rejects(Pager.start({ uffds: [uffd], readersPerUffd: 1, pageSize: 4096, resolution: { kind: 'zeropage' } }), {
      code: 'ERR_INVALID_ARG',
      message: /nonBlocking/,
    });
  } finally {
    uffd.close();
  }
});
