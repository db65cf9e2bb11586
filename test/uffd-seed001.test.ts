/**
 * Seed 001 (UFFDIO_REGISTER_MODE_MINOR and UFFDIO_CONTINUE, 2021) documents how the
 * resolving ioctls answer when used on the wrong kind of page. Each row is asserted
 * against the running kernel. Where the kernel has moved on since the letter, the row
 * says what the letter said and asserts what this kernel does; the `why` explains it.
 *
 * The ioctls are issued without a thread waiting in the fault: the answer depends on the
 * state of the page (absent, in the page cache but unmapped, mapped), not on whether
 * somebody is asleep on it.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { hva, type HostAddress } from '../src/address.js';
import { Backing, type BackingSourceName } from '../src/memory/backing.js';
import { SystemError } from '../src/native/errors.js';
import { native } from '../src/native/binding.js';
import { Userfaultfd } from '../src/uffd/userfaultfd.js';
import { prepare } from './helpers/requirements.js';

type PageState = 'absent' | 'minor' | 'mapped';
type Op = 'CONTINUE' | 'COPY' | 'ZEROPAGE';

interface Row {
  op: Op;
  on: PageState;
  source: BackingSourceName;
  expect: string;
  letter?: string;
  why?: string;
}

const table: Row[] = [
  // "UFFDIO_CONTINUE cannot be used to resolve non-minor faults, as it does not allocate a new page."
  { op: 'CONTINUE', on: 'absent', source: 'anonymous', expect: 'EINVAL', letter: 'EINVAL' },
  {
    op: 'CONTINUE', on: 'absent', source: 'shmem', expect: 'EFAULT', letter: 'EINVAL',
    why: 'shmem minor support (5.13) made mfill_atomic_pte_continue turn "no folio" into -EFAULT, as hugetlb does',
  },
  { op: 'CONTINUE', on: 'absent', source: 'shared_hugetlb', expect: 'EFAULT', letter: 'EFAULT' },
  { op: 'CONTINUE', on: 'absent', source: 'anonymous_hugetlb', expect: 'EFAULT', letter: 'EFAULT' },
  // "If UFFDIO_COPY is used on a minor fault, -EEXIST is returned."
  { op: 'COPY', on: 'minor', source: 'shmem', expect: 'EEXIST', letter: 'EEXIST' },
  { op: 'COPY', on: 'minor', source: 'shared_hugetlb', expect: 'EEXIST', letter: 'EEXIST' },
  // "If UFFDIO_ZEROPAGE is used on a minor fault, -EEXIST is returned (or -EINVAL in the case of hugetlb)."
  { op: 'ZEROPAGE', on: 'minor', source: 'shmem', expect: 'EEXIST', letter: 'EEXIST' },
  { op: 'ZEROPAGE', on: 'minor', source: 'shared_hugetlb', expect: 'EINVAL', letter: 'EINVAL' },
  // A second resolution of the same page: the page is there, the kernel says so.
  { op: 'COPY', on: 'mapped', source: 'anonymous', expect: 'EEXIST' },
  { op: 'COPY', on: 'mapped', source: 'shmem', expect: 'EEXIST' },
  { op: 'COPY', on: 'mapped', source: 'anonymous_hugetlb', expect: 'EEXIST' },
  { op: 'ZEROPAGE', on: 'mapped', source: 'anonymous', expect: 'EEXIST' },
  { op: 'CONTINUE', on: 'mapped', source: 'shmem', expect: 'EEXIST' },
  { op: 'CONTINUE', on: 'mapped', source: 'shared_hugetlb', expect: 'EEXIST' },
  // The right ioctl on the right page, for contrast.
  { op: 'CONTINUE', on: 'minor', source: 'shmem', expect: 'OK' },
  { op: 'CONTINUE', on: 'minor', source: 'shared_hugetlb', expect: 'OK' },
  { op: 'COPY', on: 'absent', source: 'shmem', expect: 'OK' },
];

/** Puts the first page of a fresh region in `state` and registers the region. */
function setUp(source: BackingSourceName, state: PageState) {
  const b = Backing.create(source, pageOf(source) * 2);
  const modes = b.info.shared ? (['MISSING', 'MINOR'] as const) : (['MISSING'] as const);
  const uffd = Userfaultfd.open({ nonBlocking: true });
  const src = Backing.create('anonymous', b.info.pageSize);
  uffd.register(b.primary.address, b.size, modes);
  const page = b.primary.address;
  if (state === 'minor') b.alias!.bytes(0, 8).fill(1); // in the page cache, not mapped in the primary
  if (state === 'mapped') uffd.copy(page, src.primary.address, b.info.pageSize);
  return { b, uffd, src, page, close: () => (uffd.close(), b.close(), src.close()) };
}

function pageOf(source: BackingSourceName): number {
  return source.includes('hugetlb') ? 2 * 1024 * 1024 : 4096;
}

function attempt(op: Op, uffd: Userfaultfd, page: HostAddress, src: HostAddress, length: number): string {
  try {
    if (op === 'CONTINUE') uffd.continue(page, length);
    else if (op === 'COPY') uffd.copy(page, src, length);
    else uffd.zeropage(page, length);
    return 'OK';
  } catch (e) {
    if (e instanceof SystemError) {
      assert.equal(e.syscall, `ioctl(UFFDIO_${op})`);
      assert.equal(e.start, page);
      assert.equal(e.length, length);
      assert.match(e.message, new RegExp(`^ioctl\\(UFFDIO_${op}\\) \\[0x${page.toString(16)}, 0x${(page + length).toString(16)}\\): ${e.code}$`));
      return e.code;
    }
    throw e;
  }
}

describe('seed 001: how the resolving ioctls answer on each kind of page', () => {
  const skips = new Map<BackingSourceName, string | undefined>();
  for (const row of table) if (!skips.has(row.source)) skips.set(row.source, prepare(row.source, 2 * pageOf(row.source)));

  for (const row of table) {
    const name = `${row.op} on a${row.on === 'absent' ? 'n absent' : row.on === 'minor' ? ' minor (page cache, unmapped)' : ' mapped'} ${row.source} page: ${row.expect}` +
      (row.letter && row.letter !== row.expect ? ` (the letter said ${row.letter})` : '');
    test(name, { skip: skips.get(row.source) }, () => {
      const s = setUp(row.source, row.on);
      try {
        assert.equal(attempt(row.op, s.uffd, s.page, s.src.primary.address, s.b.info.pageSize), row.expect, row.why);
      } finally {
        s.close();
      }
    });
  }

  test('MINOR registration on private anonymous memory: EINVAL (minor faults need shared memory)', () => {
    const b = Backing.create('anonymous', 4096);
    const uffd = Userfaultfd.open({ nonBlocking: true });
    try {
      assert.throws(() => uffd.register(b.primary.address, 4096, ['MINOR']), { code: 'EINVAL', syscall: 'ioctl(UFFDIO_REGISTER)' });
    } finally {
      uffd.close();
      b.close();
    }
  });

  // The letter: "UFFDIO_WRITEPROTECT simply doesn't work with shared memory, and returns
  // -ENOENT". Linux 5.19 added write protection for shmem and hugetlbfs
  // (UFFD_FEATURE_WP_HUGETLBFS_SHMEM): on this kernel a WP registration of shared memory is
  // accepted and write-protecting it works. ENOENT remains the answer for a range that was
  // not registered for WP.
  for (const source of ['shmem', 'shared_hugetlb'] as const) {
    test(`WRITEPROTECT on ${source}: works when registered WP; ENOENT when not (the letter said ENOENT always)`, { skip: skips.get(source) ?? prepare(source, 2 * pageOf(source)) }, () => {
      const info = Userfaultfd.query();
      const b = Backing.create(source, pageOf(source) * 2);
      try {
        const plain = Userfaultfd.open({ nonBlocking: true });
        plain.register(b.primary.address, b.size, ['MINOR']);
        assert.throws(() => plain.writeProtect(b.primary.address, b.info.pageSize, true), { code: 'ENOENT' });
        plain.close();
        if ((info.features & (1n << 12n)) === 0n) return; // WP_HUGETLBFS_SHMEM not granted: nothing more to check
        const wp = Userfaultfd.open({ features: ['PAGEFAULT_FLAG_WP', 'WP_HUGETLBFS_SHMEM'], nonBlocking: true });
        const reg = wp.register(b.primary.address, b.size, ['WP']);
        assert.ok(reg.allows('WRITEPROTECT'));
        wp.writeProtect(b.primary.address, b.info.pageSize, true);
        wp.writeProtect(b.primary.address, b.info.pageSize, false);
        wp.close();
      } finally {
        b.close();
      }
    });
  }
});

describe('Userfaultfd handle', () => {
  test('close() is safe twice; any call after it is a ClosedError naming the call', () => {
    const uffd = Userfaultfd.open();
    uffd.close();
    uffd.close();
    assert.equal(uffd.closed, true);
    assert.throws(() => uffd.wake(hva(0x10000), 4096), { name: 'ClosedError', code: 'ERR_CLOSED', message: /^wake: userfaultfd \d+ is closed$/ });
    assert.throws(() => uffd.read(), { name: 'ClosedError' });
  });

  test('a misaligned or empty range is refused before the kernel sees it, with the range in the message', () => {
    const uffd = Userfaultfd.open();
    try {
      assert.throws(() => uffd.register(hva(0x10001), 4096, ['MISSING']), { code: 'ERR_INVALID_ARG', message: /\[0x10001, 0x11001\): start and length must be multiples of the page size/ });
      assert.throws(() => uffd.register(hva(0x10000), 0, ['MISSING']), { code: 'ERR_INVALID_ARG' });
      assert.throws(() => uffd.register(hva(0x10000), 4096, []), { code: 'ERR_INVALID_ARG', message: /at least one mode/ });
    } finally {
      uffd.close();
    }
  });

  test('the features negotiated are those requested, and each requested one is reported', () => {
    const available = Userfaultfd.query();
    const uffd = Userfaultfd.open({ features: ['THREAD_ID', 'EVENT_REMOVE'] });
    try {
      assert.ok(uffd.has('THREAD_ID') && uffd.has('EVENT_REMOVE'));
      assert.ok(!uffd.has('EVENT_FORK'), 'not requested, not negotiated');
      assert.deepEqual(uffd.featureNames(), ['EVENT_REMOVE', 'THREAD_ID']);
      assert.ok(uffd.ioctlNames().includes('REGISTER') && uffd.ioctlNames().includes('API'));
      assert.equal(available.features & uffd.features, uffd.features);
    } finally {
      uffd.close();
    }
  });

  test('a feature the kernel does not grant is refused by name, with what is granted', () => {
    // Bit 62 is no feature any kernel has; asking for it must be refused before UFFDIO_API.
    assert.throws(() => Userfaultfd.open({ features: 1n << 62n }), { name: 'UnsupportedError', message: /does not grant feature/ });
  });

  test('/dev/userfaultfd and userfaultfd(2) give equivalent descriptors', () => {
    const viaSyscall = Userfaultfd.open({ via: 'syscall', features: ['MINOR_SHMEM'] });
    const viaDevice = Userfaultfd.open({ via: 'device', features: ['MINOR_SHMEM'] });
    try {
      assert.equal(viaSyscall.via, 'syscall');
      assert.equal(viaDevice.via, 'device');
      assert.equal(viaSyscall.features, viaDevice.features);
      assert.equal(viaSyscall.ioctls, viaDevice.ioctls);
    } finally {
      viaSyscall.close();
      viaDevice.close();
    }
  });
});

describe('waiting for faults', () => {
  test('pollRead reports the other descriptors and reads nothing when only they are ready', () => {
    const uffd = Userfaultfd.open({ nonBlocking: true });
    const stop = native.eventfd(1, 0o2000000); // already readable
    try {
      const fds = new Int32Array([uffd.fd, 1, 0, stop, 1, 0]);
      assert.equal(uffd.pollRead(fds, 1000), 0);
      assert.equal(fds[2], 0, 'the userfaultfd had nothing');
      assert.equal(fds[5], 1, 'POLLIN on the eventfd');
    } finally {
      native.close(stop);
      uffd.close();
    }
  });

  test('on a blocking userfaultfd the kernel answers poll with POLLERR (readers need nonBlocking)', () => {
    const uffd = Userfaultfd.open();
    try {
      const fds = new Int32Array([uffd.fd, 1, 0]);
      assert.equal(native.poll(fds, 0), 1);
      assert.equal(fds[2]! & 8, 8, 'POLLERR');
    } finally {
      uffd.close();
    }
  });
});
