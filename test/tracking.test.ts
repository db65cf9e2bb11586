/**
 * Dirty tracking on the real kernel. uffd-wp: every page written between two collections
 * is reported, by whichever thread wrote it, and no page that was not; through the tracked
 * mapping only; hugetlb in whole huge pages. kvm-dirty-log: the DirtyTracker face of a KVM
 * slot's dirty log (needs /dev/kvm).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { gpa } from '../src/address.js';
import { ClosedError, InvalidArgumentError, PermissionError, UnsupportedError } from '../src/errors.js';
import { KvmMemFlag } from '../src/kvm/constants.js';
import { DirtyLog, enableManualDirtyLog } from '../src/kvm/dirty-log.js';
import { Kvm } from '../src/kvm/system.js';
import { Backing, BACKING_INFO, type BackingSourceName } from '../src/memory/backing.js';
import { MapFlag, Prot } from '../src/memory/constants.js';
import { Mapping } from '../src/memory/mapping.js';
import { KvmDirtyLogTracker } from '../src/tracking/kvm-dirty-log.js';
import { probeUffdWp } from '../src/tracking/probe.js';
import { UffdWpTracker } from '../src/tracking/uffd-wp.js';
import { Userfaultfd } from '../src/uffd/userfaultfd.js';
import { prepare } from './helpers/requirements.js';
import { Writers, reportedPages, sleepMs } from './helpers/tracking.js';
import { kvmAvailability } from '../src/guest/open.js';

const PAGE = 4096;
const MiB = 2 ** 20;

/** Why uffd-wp tracking cannot run here at all, or undefined. */
const NO_UFFD_WP = (() => {
  const b = Backing.create('anonymous', 16 * PAGE);
  try {
    UffdWpTracker.start({ address: b.primary.address, size: b.size, pageSize: PAGE }).close();
    return undefined;
  } catch (e) {
    if (e instanceof UnsupportedError || e instanceof PermissionError) return e.message;
    throw e;
  } finally {
    b.close();
  }
})();
if (NO_UFFD_WP) console.log(`# skipping uffd-wp tracking tests: ${NO_UFFD_WP}`);

function track(b: Backing): UffdWpTracker {
  return UffdWpTracker.start({ address: b.primary.address, size: b.size, pageSize: b.info.pageSize });
}

/** Runs `body` on fresh memory of `source` under a tracker whose first collection is done; closes both. */
function tracked(source: BackingSourceName, size: number, body: (b: Backing, t: UffdWpTracker) => void): void {
  const b = Backing.create(source, size);
  try {
    const t = track(b);
    try {
      t.collect();
      body(b, t);
    } finally {
      t.close();
    }
  } finally {
    b.close();
  }
}

/** The 4 KiB pages a write to each of `pages` dirties: its whole backing page (512 of them for 2 MiB hugetlb). */
function dirtied(pages: number[], pageSize: number): number[] {
  const per = pageSize / PAGE;
  const units = [...new Set(pages.map((p) => Math.floor(p / per)))].sort((a, b) => a - b);
  return units.flatMap((u) => Array.from({ length: per }, (_, i) => u * per + i));
}

function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i);
}

const SOURCES: { source: BackingSourceName; size: number }[] = [
  { source: 'anonymous', size: 16 * MiB },
  { source: 'shmem', size: 16 * MiB },
  { source: 'anonymous_hugetlb', size: 16 * MiB },
  { source: 'shared_hugetlb', size: 16 * MiB },
];

for (const { source, size } of SOURCES) {
  const info = BACKING_INFO[source];
  const skip = NO_UFFD_WP ?? prepare(source, size);
  if (skip && !NO_UFFD_WP) console.log(`# skipping uffd-wp tracking on ${source}: ${skip}`);
  const pages = size / PAGE;

  describe(`uffd-wp tracking on ${source}`, { skip }, () => {
    test('the first collection reports every page; the next, exactly the pages written in between; then none', () => {
      const b = Backing.create(source, size);
      try {
        const bytes = b.primary.bytes();
        // The first half is populated before tracking starts; the second half never is.
        for (let off = 0; off < size / 2; off += info.pageSize) bytes[off] = 1;
        const t = track(b);
        assert.equal(t.pages, pages);
        assert.deepEqual(reportedPages(t.collect(), pages), range(pages), 'first collection: every page');
        const written = [0, 1, 63, 64, 700, pages / 2 - 1, pages / 2, pages / 2 + 1, pages - 1];
        for (const p of written) {
          bytes[p * PAGE + 100] = 2;
          bytes[p * PAGE + 200] = 3; // twice: still one page
        }
        assert.deepEqual(reportedPages(t.collect(), pages), dirtied(written, info.pageSize));
        assert.deepEqual(reportedPages(t.collect(), pages), [], 'nothing written since: nothing reported');
        bytes[5 * PAGE] = 4;
        assert.deepEqual(reportedPages(t.collect(), pages), dirtied([5], info.pageSize), 'a page written again is reported again');
        t.close();
      } finally {
        b.close();
      }
    });

    test('pages written since start() but before the first collection are not reported again by the second', () => {
      const b = Backing.create(source, size);
      try {
        const t = track(b);
        b.primary.bytes()[3 * PAGE] = 1;
        assert.equal(reportedPages(t.collect(), pages).length, pages);
        assert.deepEqual(reportedPages(t.collect(), pages), []);
        t.close();
      } finally {
        b.close();
      }
    });

    test('several threads writing while the main thread collects: no written page is missed, no page never written is reported', async () => {
      const b = Backing.create(source, size);
      const t = track(b);
      const lastReported = new Int32Array(pages).fill(-1);
      const record = (k: number) => {
        for (const p of reportedPages(t.collect(), pages)) lastReported[p] = k;
      };
      // The writers keep off the last quarter (whole huge pages too): it is never written.
      const writable = (pages * 3) / 4;
      const writers = await Writers.start(b.primary.address, size, writable, 3);
      let writes = 0;
      try {
        record(0); // the first collection, before anyone writes: everything
        writers.completed(0);
        writers.go();
        const ROUNDS = 60;
        for (let k = 1; k <= ROUNDS; k++) {
          sleepMs(3);
          record(k);
          writers.completed(k);
        }
        writes = await writers.stop();
        record(ROUNDS + 1); // the writers are gone: this one sees their last writes
        let written = 0;
        const missed: number[] = [];
        for (let p = 0; p < pages; p++) {
          const seen = writers.lastWrite[p]!;
          if (seen < 0) continue;
          written++;
          // A write that saw `seen` collections completed must be in a later one.
          if (lastReported[p]! <= seen) missed.push(p);
        }
        assert.ok(written > pages / 4, `the writers wrote ${written} distinct pages (${writes} writes)`);
        assert.deepEqual(missed, [], `${missed.length} written page(s) never reported after their last write`);
        for (let p = writable; p < pages; p++) {
          assert.ok(lastReported[p]! <= 0, `page ${p} was never written, but collection ${lastReported[p]} reported it`);
        }
      } finally {
        await writers.stop();
        t.close();
        b.close();
      }
    });

    test('more regions than one PAGEMAP_SCAN call returns, or than the kernel\'s 512 per call: all reported', () => {
      const b = Backing.create(source, size);
      try {
        const per = info.pageSize / PAGE;
        // Every other backing page: as many separate regions as the range can hold.
        const written = range(pages / per / 2).map((i) => 2 * i * per);
        const bytes = b.primary.bytes();
        // A short vector (several calls, each resumed at walk_end), then the default (one call
        // returning them all: more than 512 for 4 KiB pages, where walk_end comes back stale).
        for (const regionsPerCall of [per > 1 ? 3 : 100, undefined]) {
          const t = UffdWpTracker.start({ address: b.primary.address, size, pageSize: info.pageSize }, { regionsPerCall });
          t.collect();
          for (const p of written) bytes[p * PAGE] = 1;
          assert.deepEqual(reportedPages(t.collect(), pages), dirtied(written, info.pageSize), `${regionsPerCall ?? 'default'} regions per call`);
          assert.deepEqual(reportedPages(t.collect(), pages), []);
          t.close();
        }
      } finally {
        b.close();
      }
    });

    if (info.shared) {
      test('writes through an unregistered alias of the same memory are not reported; through the tracked mapping they are', () => {
        tracked(source, size, (b, t) => {
          const alias = b.alias!.bytes();
          for (const p of [0, 1, pages - 1]) alias[p * PAGE] = 7;
          assert.deepEqual(reportedPages(t.collect(), pages), [], 'alias writes: tracking is per mapping');
          assert.equal(b.primary.bytes()[PAGE], 7, 'the alias wrote the same memory');
          b.primary.bytes()[PAGE] = 8;
          assert.deepEqual(reportedPages(t.collect(), pages), dirtied([1], info.pageSize));
        });
      });
    }

    if (info.hugetlb) {
      test('an 8-byte write reports its whole huge page; a range not in whole huge pages is refused', () => {
        tracked(source, size, (b, t) => {
          new DataView(b.primary.bytes().buffer).setBigUint64(info.pageSize + 3 * PAGE, 1n, true);
          const got = reportedPages(t.collect(), pages);
          assert.equal(got.length, info.pageSize / PAGE);
          assert.deepEqual(got, dirtied([info.pageSize / PAGE], info.pageSize));
          // A scan over part of a huge page makes no progress: never start one.
          assert.throws(() => UffdWpTracker.start({ address: b.primary.address + PAGE, size: info.pageSize, pageSize: info.pageSize }), InvalidArgumentError);
        });
      });
    }
  });
}

describe('uffd-wp tracking: its life and its refusals', { skip: NO_UFFD_WP }, () => {
  test('close() twice is safe; collect() after it is refused; the range can then be tracked again', () => {
    const b = Backing.create('anonymous', 64 * PAGE);
    try {
      const t = track(b);
      t.collect();
      t.close();
      t.close();
      assert.throws(() => t.collect(), ClosedError);
      // Unregistered: a new tracker (a new userfaultfd) can register the same range.
      const again = track(b);
      assert.equal(reportedPages(again.collect(), 64).length, 64);
      again.close();
    } finally {
      b.close();
    }
  });

  test('a range another userfaultfd has registered is refused, saying so', () => {
    const b = Backing.create('anonymous', 64 * PAGE);
    const other = Userfaultfd.open();
    try {
      other.register(b.primary.address, b.size, ['MISSING']);
      assert.throws(() => track(b), (e: Error) => e instanceof InvalidArgumentError && /already registered with another userfaultfd/.test(e.message));
    } finally {
      other.close();
      b.close();
    }
  });

  test('memory userfaultfd cannot write-protect (MAP_DROPPABLE) is an UnsupportedError naming it', (t) => {
    const MAP_DROPPABLE = 0x08;
    let m: Mapping;
    try {
      m = Mapping.map(64 * PAGE, { prot: Prot.READ | Prot.WRITE, flags: MAP_DROPPABLE | MapFlag.ANONYMOUS });
    } catch (e) {
      return t.skip(`no MAP_DROPPABLE in this kernel (Linux 6.11+): ${(e as Error).message}`);
    }
    try {
      assert.throws(
        () => UffdWpTracker.start({ address: m.address, size: m.length, pageSize: PAGE }),
        (e: Error) => e instanceof UnsupportedError && /cannot write-protect this memory/.test(e.message),
      );
    } finally {
      m.unmap();
    }
  });

  test('probeUffdWp: usable here, found by writing and collecting, with the features it used', () => {
    const r = probeUffdWp();
    assert.equal(r.usable, true, r.usable ? '' : `${r.reason}. ${r.remedy}`);
    if (!r.usable) return;
    assert.ok(r.features.includes('WP_ASYNC'));
    assert.ok(r.features.includes('PAGEMAP_SCAN'));
  });
});

test('probeUffdWp says why not, with a remedy, where uffd-wp cannot run', { skip: NO_UFFD_WP ? undefined : 'uffd-wp works on this kernel' }, () => {
  const r = probeUffdWp();
  assert.equal(r.usable, false);
  if (r.usable) return;
  assert.ok(r.reason.length > 0 && r.remedy.length > 0);
});

const KVM_STATE = kvmAvailability();
const NO_KVM = KVM_STATE.usable ? undefined : `no usable KVM (${KVM_STATE.reason}): load kvm_intel or kvm_amd (or enable nested virtualization) to test kvm-dirty-log tracking`;
if (NO_KVM) console.log(`# skipping kvm-dirty-log tracking tests: ${NO_KVM}`);

describe('kvm-dirty-log tracking', { skip: NO_KVM }, () => {
  test('the first collection reports every page of the slot (INITIALLY_SET); with no guest writes, the next none; close twice is safe', () => {
    const size = 256 * PAGE;
    const kvm = Kvm.open();
    const vm = kvm.createVm();
    const memory = Mapping.map(size, { flags: MapFlag.PRIVATE | MapFlag.ANONYMOUS });
    try {
      enableManualDirtyLog(vm);
      vm.setUserMemoryRegion(0, { guestAddress: gpa(0), size, userspaceAddress: memory.address, flags: KvmMemFlag.KVM_MEM_LOG_DIRTY_PAGES });
      const t = new KvmDirtyLogTracker(new DirtyLog(vm, 0, size));
      assert.equal(t.name, 'kvm-dirty-log');
      assert.equal(t.pages, 256);
      assert.deepEqual(reportedPages(t.collect(), 256), range(256));
      assert.deepEqual(reportedPages(t.collect(), 256), []);
      t.close();
      t.close();
      assert.throws(() => t.collect(), ClosedError);
    } finally {
      vm.close();
      kvm.close();
      memory.unmap();
    }
  });
});
