/**
 * The PAGEMAP_SCAN ioctl on /proc/self/pagemap (Linux 6.7+): one walk of this process's
 * page tables over [start, end) that reports runs of pages by category (written, present,
 * huge, ...) and, with PM_SCAN_WP_MATCHING, write-protects the pages it reports in the
 * same walk, under the page-table lock, so a write racing the call is reported by this
 * call or by the next one, never by neither.
 *
 * The ABI is defined here, from include/uapi/linux/fs.h of Linux 6.18: the headers on the
 * build machine are 6.1's, which predate it (and the addon is generic: native.ioctl passes
 * our bytes to the kernel, which reads the struct and writes walk_end back into it).
 */
import { UnsupportedError } from '../errors.js';
import { native } from '../native/binding.js';
import { isSystemError } from '../native/errors.js';

/** PAGE_IS_* categories of a page (a page_region's `categories`, and the masks). */
export const PageCategory = {
  WPALLOWED: 1 << 0,
  /** Not write-protected: written since it was last protected (or never protected). */
  WRITTEN: 1 << 1,
  FILE: 1 << 2,
  PRESENT: 1 << 3,
  SWAPPED: 1 << 4,
  PFNZERO: 1 << 5,
  HUGE: 1 << 6,
  SOFT_DIRTY: 1 << 7,
  GUARD: 1 << 8,
} as const;

/** pm_scan_arg.flags */
export const ScanFlag = {
  /** Write-protect the pages that match (and are reported) in the same walk. */
  WP_MATCHING: 1 << 0,
  /** Fail with EPERM unless every VMA in the range is registered in uffd-wp async mode. */
  CHECK_WPASYNC: 1 << 1,
} as const;

/** sizeof(struct pm_scan_arg): twelve u64 fields. */
export const PM_SCAN_ARG_SIZE = 96;
/** sizeof(struct page_region): start, end, categories. */
export const PAGE_REGION_SIZE = 24;

/** _IOWR('f', 16, struct pm_scan_arg) = dir 3 << 30 | size << 16 | type << 8 | nr. */
export const PAGEMAP_SCAN = 3 * 2 ** 30 + PM_SCAN_ARG_SIZE * 2 ** 16 + 'f'.charCodeAt(0) * 2 ** 8 + 16;

/** u64 field indices of struct pm_scan_arg, in its order. */
const Arg = {
  size: 0,
  flags: 1,
  start: 2,
  end: 3,
  walk_end: 4,
  vec: 5,
  vec_len: 6,
  max_pages: 7,
  category_inverted: 8,
  category_mask: 9,
  category_anyof_mask: 10,
  return_mask: 11,
} as const;

/** What one scan asks for; pass one object for many calls (nothing is allocated per call). */
export interface ScanQuery {
  /** ScanFlag bits. */
  readonly flags: number;
  /** Categories a page must have (after inversion) to match. */
  readonly categoryMask: number;
  /** Categories whose sense is inverted before matching. Default 0. */
  readonly categoryInverted?: number;
  /** Matches when any of these is set. Default 0. */
  readonly categoryAnyofMask?: number;
  /** Categories reported in each region (regions split where these differ). */
  readonly returnMask: number;
  /** Stop after this many matching pages; 0 for no limit. Default 0. */
  readonly maxPages?: number;
}

const TWO32 = 2 ** 32;

const PROC_PAGEMAP = '/proc/self/pagemap';
const O_RDONLY = 0;
const O_CLOEXEC = 0o2000000;

const REMEDY = 'PAGEMAP_SCAN (and userfaultfd WP_ASYNC) need Linux 6.7 or later: run on a newer kernel, or track with kvm-dirty-log';

/**
 * /proc/self/pagemap opened for PAGEMAP_SCAN, with its argument struct and an output
 * vector of `capacity` regions allocated once and reused by every scan(): the struct
 * holds the vector's address, and ArrayBuffer memory does not move.
 */
export class PagemapScan {
  readonly fd: number;
  /** How many regions one scan() can return. */
  readonly capacity: number;
  readonly #arg = new Uint8Array(PM_SCAN_ARG_SIZE);
  // Fields are written and read as 32-bit halves: addresses fit in 2^53, and BigInt
  // accessors would allocate on every call.
  readonly #argHalves = new Uint32Array(this.#arg.buffer);
  readonly #vec: Uint8Array;
  readonly #vecHalves: Uint32Array;
  #closed = false;

  private constructor(fd: number, capacity: number) {
    this.fd = fd;
    this.capacity = capacity;
    this.#vec = new Uint8Array(capacity * PAGE_REGION_SIZE);
    this.#vecHalves = new Uint32Array(this.#vec.buffer);
    this.#set(Arg.size, PM_SCAN_ARG_SIZE);
    this.#set(Arg.vec, native.addressOf(this.#vec));
    this.#set(Arg.vec_len, capacity);
  }

  /**
   * Opens /proc/self/pagemap and checks that this kernel's PAGEMAP_SCAN accepts this
   * struct and `flags` (with a scan of the unmapped first page, which walks nothing):
   * ENOTTY (no such ioctl, before 6.7) and EINVAL (an older struct or unknown flags) are
   * an UnsupportedError naming what is missing.
   */
  static open(capacity: number, flags: number): PagemapScan {
    if (!Number.isSafeInteger(capacity) || capacity < 1) throw new RangeError(`PagemapScan: capacity ${capacity} is not a positive integer`);
    const scan = new PagemapScan(native.open(PROC_PAGEMAP, O_RDONLY | O_CLOEXEC, 0), capacity);
    try {
      scan.scan(0, 4096, { flags, categoryMask: PageCategory.WRITTEN, returnMask: PageCategory.WRITTEN });
    } catch (e) {
      scan.close();
      if (isSystemError(e, 'ENOTTY')) {
        throw new UnsupportedError(`PAGEMAP_SCAN: this kernel has no PAGEMAP_SCAN ioctl on ${PROC_PAGEMAP} (ENOTTY)`, REMEDY);
      }
      if (isSystemError(e, 'EINVAL')) {
        throw new UnsupportedError(
          `PAGEMAP_SCAN: this kernel refuses a ${PM_SCAN_ARG_SIZE}-byte pm_scan_arg with flags 0x${flags.toString(16)} (EINVAL)`,
          REMEDY,
        );
      }
      throw e;
    }
    return scan;
  }

  #set(field: number, value: number): void {
    this.#argHalves[2 * field] = value >>> 0;
    this.#argHalves[2 * field + 1] = Math.floor(value / TWO32);
  }

  /**
   * One PAGEMAP_SCAN over [start, end) (start page-aligned; the kernel rounds end up):
   * the number of regions written to the vector, read them with regionStart/End/Categories.
   * When that equals `capacity` the vector filled up and the walk stopped at walkEnd;
   * when it is less, the walk covered the whole range and walkEnd means nothing (see
   * walkEnd).
   */
  scan(start: number, end: number, query: ScanQuery): number {
    this.#set(Arg.flags, query.flags);
    this.#set(Arg.start, start);
    this.#set(Arg.end, end);
    this.#set(Arg.walk_end, 0);
    this.#set(Arg.max_pages, query.maxPages ?? 0);
    this.#set(Arg.category_inverted, query.categoryInverted ?? 0);
    this.#set(Arg.category_mask, query.categoryMask);
    this.#set(Arg.category_anyof_mask, query.categoryAnyofMask ?? 0);
    this.#set(Arg.return_mask, query.returnMask);
    return native.ioctl(this.fd, PAGEMAP_SCAN, this.#arg, 'PAGEMAP_SCAN');
  }

  /**
   * Where the last scan stopped. Only meaningful when it returned `capacity` regions: on
   * Linux 6.18, a call that returns more than 512 regions (the kernel's bounce buffer)
   * and completes leaves walk_end at the start of its last 512-region chunk, short of
   * `end`. Loop on "the vector filled up", never on walk_end < end.
   */
  get walkEnd(): number {
    const h = this.#argHalves;
    return h[2 * Arg.walk_end + 1]! * TWO32 + h[2 * Arg.walk_end]!;
  }

  #u64(i: number, field: number): number {
    const at = (i * PAGE_REGION_SIZE) / 4 + 2 * field;
    return this.#vecHalves[at + 1]! * TWO32 + this.#vecHalves[at]!;
  }

  /** Start address of region i of the last scan. */
  regionStart(i: number): number {
    return this.#u64(i, 0);
  }

  /** End address (exclusive) of region i of the last scan. */
  regionEnd(i: number): number {
    return this.#u64(i, 1);
  }

  /** PageCategory bits (of the return mask) of region i of the last scan. */
  regionCategories(i: number): number {
    return this.#u64(i, 2);
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Closes /proc/self/pagemap. Safe twice. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    native.close(this.fd);
  }
}
