/**
 * Dirty tracking of one host mapping with userfaultfd write-protect in async mode
 * (UFFD_FEATURE_WP_ASYNC, Linux 6.7+): the range is registered with MODE_WP and
 * write-protected; a write to a protected page is resolved by the kernel itself (it
 * clears the page's uffd-wp bit, no message, no handler thread), and one PAGEMAP_SCAN
 * with PM_SCAN_WP_MATCHING reports the unprotected ("written") pages and protects them
 * again in the same page-table walk. Any thread's writes through this mapping are seen,
 * KVM or not; writes through another mapping of the same memory (an alias of a memfd,
 * pwrite to it) are not: tracking is per mapping.
 *
 * Facts this relies on, measured on Linux 6.18 with the C prototype in
 * shared/prototypes/uffd-wp and checked by test/tracking.test.ts:
 * - "written" means "not write-protected": pages dropped with MADV_DONTNEED, or written
 *   by the kernel on the process's behalf (read() into the range, process_vm_writev), are
 *   reported too. Over-reporting is safe; nothing written is missed.
 * - hugetlb is tracked in whole huge pages: a written huge page reports all its 4 KiB
 *   pages, and a scan over part of a huge page makes no progress.
 * - After tracking stops, each shmem page takes one more write fault (the PTEs stay
 *   read-only until written).
 */
import { hva, type HostAddress } from '../address.js';
import { ClosedError, InvalidArgumentError, UnsupportedError } from '../errors.js';
import { isSystemError } from '../native/errors.js';
import { Feature, type FeatureName } from '../uffd/constants.js';
import { Userfaultfd } from '../uffd/userfaultfd.js';
import { formatRange } from '../util/format.js';
import { PageCategory, PagemapScan, ScanFlag, type ScanQuery } from './pagemap-scan.js';
import type { DirtyTracker } from './tracker.js';

const PAGE = 4096;

/** What start() tracks: a mapping (or part of one) and the page size of its backing. */
export interface TrackedRange {
  readonly address: number;
  readonly size: number;
  /** The backing's page size: 4096, or the huge page size for hugetlb (2 MiB, 1 GiB). */
  readonly pageSize: number;
}

export interface UffdWpOptions {
  /**
   * Regions one PAGEMAP_SCAN call may return (each 24 bytes, allocated once). A collection
   * makes as many calls as it needs; default min(4096, what the range can hold).
   */
  regionsPerCall?: number;
}

/** Features used when this kernel offers them, besides the WP_ASYNC that is required. */
const OPTIONAL: readonly FeatureName[] = [
  // Never-populated pages get a write-protect marker, so a first write into a hole is
  // reported. (Anonymous memory has this with WP_ASYNC alone on 6.18; shmem needs it.)
  'WP_UNPOPULATED',
  // Write-protect of hugetlbfs and shmem (sync mode needs it to register them; async
  // registers any memory, but ask for it where it exists so the meaning is explicit).
  'WP_HUGETLBFS_SHMEM',
];

const UPGRADE = 'userfaultfd WP_ASYNC and PAGEMAP_SCAN need Linux 6.7 or later: run on a newer kernel, or track with kvm-dirty-log';

/**
 * The fast path: report and re-protect exactly the written pages. Both masks are WRITTEN
 * only, so the kernel does not split regions by other categories and matches with one
 * test per page table entry.
 */
const WRITTEN: ScanQuery = {
  flags: ScanFlag.WP_MATCHING | ScanFlag.CHECK_WPASYNC,
  categoryMask: PageCategory.WRITTEN,
  returnMask: PageCategory.WRITTEN,
};

export class UffdWpTracker implements DirtyTracker {
  readonly name = 'uffd-wp' as const;
  readonly pages: number;
  readonly address: HostAddress;
  readonly size: number;
  readonly pageSize: number;
  /** The userfaultfd features negotiated (WP_ASYNC and those of OPTIONAL the kernel offers). */
  readonly features: readonly FeatureName[];
  readonly #uffd: Userfaultfd;
  readonly #scan: PagemapScan;
  readonly #words: BigUint64Array;
  // The same bits as 32-bit halves (little-endian: page p is bit p % 32 of half p / 32):
  // setting runs of bits in a BigUint64Array would allocate a BigInt per element touched.
  readonly #halves: Uint32Array;
  #first = true;
  #closed = false;

  private constructor(range: TrackedRange, uffd: Userfaultfd, scan: PagemapScan) {
    this.address = hva(range.address);
    this.size = range.size;
    this.pageSize = range.pageSize;
    this.pages = range.size / PAGE;
    this.#uffd = uffd;
    this.#scan = scan;
    this.features = uffd.featureNames();
    this.#words = new BigUint64Array(Math.ceil(this.pages / 64));
    this.#halves = new Uint32Array(this.#words.buffer);
  }

  /**
   * Registers [address, address+size) for write-protect faults on a userfaultfd of its own,
   * in async mode, and write-protects it: from here on, writes through this mapping are
   * recorded. The first collect() reports every page.
   */
  static start(range: TrackedRange, options: UffdWpOptions = {}): UffdWpTracker {
    checkRange(range);
    const offered = Userfaultfd.query().features; // a PermissionError names the remedy
    if ((offered & Feature.WP_ASYNC) === 0n) {
      throw new UnsupportedError('uffd-wp tracking: this kernel\'s userfaultfd does not offer WP_ASYNC (asynchronous write-protect)', UPGRADE);
    }
    const features: FeatureName[] = ['WP_ASYNC', ...OPTIONAL.filter((f) => (offered & Feature[f]) !== 0n)];
    const hold = Math.ceil(range.size / Math.max(range.pageSize, PAGE) / 2) + 1; // alternate pages: the most regions a range splits into
    const capacity = options.regionsPerCall ?? Math.min(4096, hold);
    const scan = PagemapScan.open(capacity, WRITTEN.flags);
    let uffd: Userfaultfd | undefined;
    try {
      uffd = Userfaultfd.open({ features });
      register(uffd, range);
      // Protect every page now; a populated GiB takes ~30-40 ms here. Never-populated pages
      // get markers (WP_UNPOPULATED), so their first write is seen too.
      uffd.writeProtect(hva(range.address), range.size, true);
      return new UffdWpTracker(range, uffd, scan);
    } catch (e) {
      uffd?.close();
      scan.close();
      throw e;
    }
  }

  get closed(): boolean {
    return this.#closed;
  }

  collect(): BigUint64Array {
    if (this.#closed) throw new ClosedError(`uffd-wp tracker ${formatRange(this.address, this.size)}`, 'collect');
    this.#halves.fill(0);
    // The first collection also scans: pages written since start() are protected again,
    // so the second reports only what was written after the first.
    this.#collectWritten();
    if (this.#first) {
      this.#first = false;
      setBits(this.#halves, 0, this.pages);
    }
    return this.#words;
  }

  #collectWritten(): void {
    const scan = this.#scan;
    const base: number = this.address;
    const end = base + this.size;
    let from: number = base;
    for (;;) {
      const n = scan.scan(from, end, WRITTEN);
      for (let i = 0; i < n; i++) {
        // Regions lie inside [from, end): the kernel clips them to the scanned range.
        setBits(this.#halves, (scan.regionStart(i) - base) / PAGE, (scan.regionEnd(i) - base) / PAGE);
      }
      // A vector not filled up means the walk reached `end` (walk_end can be stale then).
      if (n < scan.capacity) return;
      // Filled up: the walk stopped at walk_end; go on from there, in whole backing pages
      // (a scan starting inside a hugetlb page returns nothing and makes no progress).
      const next = base + Math.floor((scan.walkEnd - base) / this.pageSize) * this.pageSize;
      if (next >= end) return;
      if (next <= from) {
        throw new Error(`PAGEMAP_SCAN ${formatRange(from, end - from)}: a full vector of ${n} regions but no progress (walk_end 0x${scan.walkEnd.toString(16)})`);
      }
      from = next;
    }
  }

  /**
   * Unregisters the range (which removes its write protection) and closes the userfaultfd
   * and /proc/self/pagemap. Safe twice. If the memory was unmapped first, there is nothing
   * left to unregister, and closing is enough.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#uffd.unregister(this.address, this.size);
    } catch (e) {
      if (!isSystemError(e, 'ENOMEM', 'EINVAL')) throw e;
    } finally {
      this.#uffd.close();
      this.#scan.close();
    }
  }
}

function checkRange(r: TrackedRange): void {
  const ok = (v: number) => Number.isSafeInteger(v) && v > 0;
  if (!ok(r.address) || !ok(r.size) || !ok(r.pageSize) || r.pageSize % PAGE !== 0 || (r.pageSize & (r.pageSize - 1)) !== 0) {
    throw new InvalidArgumentError(`uffd-wp tracking: address ${r.address}, size ${r.size}, page size ${r.pageSize}: need positive integers, the page size a power of two and a multiple of ${PAGE}`);
  }
  if (r.address % r.pageSize !== 0 || r.size % r.pageSize !== 0) {
    throw new InvalidArgumentError(`uffd-wp tracking ${formatRange(r.address, r.size)}: start and size must be multiples of the backing's page size (${r.pageSize})`);
  }
}

function register(uffd: Userfaultfd, r: TrackedRange): void {
  try {
    const reg = uffd.register(hva(r.address), r.size, ['WP']);
    if (!reg.allows('WRITEPROTECT')) {
      throw new UnsupportedError(`uffd-wp tracking ${formatRange(r.address, r.size)}: the kernel registered the range but allows no UFFDIO_WRITEPROTECT on it`, UPGRADE);
    }
  } catch (e) {
    // The kernel's answer (with the reason the uffd layer could find) goes in the message.
    if (isSystemError(e, 'EBUSY')) {
      throw new InvalidArgumentError(`uffd-wp tracking ${formatRange(r.address, r.size)}: the range is already registered with another userfaultfd (${e.message})`, 'Track it through that userfaultfd\'s owner, or close it first');
    }
    if (isSystemError(e, 'ENOMEM')) {
      throw new InvalidArgumentError(`uffd-wp tracking ${formatRange(r.address, r.size)}: not all of the range is mapped (${e.message})`);
    }
    if (isSystemError(e, 'EINVAL')) {
      throw new UnsupportedError(
        `uffd-wp tracking ${formatRange(r.address, r.size)}: userfaultfd cannot write-protect this memory, e.g. MAP_DROPPABLE memory (${e.message})`,
        'Track ordinary anonymous, shmem or hugetlb memory',
      );
    }
    throw e;
  }
}

/** Sets bits [from, to) of a bitmap held as 32-bit words. */
function setBits(h: Uint32Array, from: number, to: number): void {
  if (from >= to) return;
  const first = from >>> 5;
  const last = (to - 1) >>> 5;
  const head = (0xffffffff << (from & 31)) >>> 0;
  const tail = (to & 31) === 0 ? 0xffffffff : (1 << (to & 31)) - 1;
  if (first === last) {
    h[first]! |= head & tail;
    return;
  }
  h[first]! |= head;
  if (last > first + 1) h.fill(0xffffffff, first + 1, last);
  h[last]! |= tail;
}
