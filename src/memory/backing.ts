import { ArgumentError, ClosedError, InvalidArgumentError, UnsupportedError } from '../errors.js';
import { describe, integer, oneOf, options as optionsArg } from '../native/args.js';
import { native } from '../native/binding.js';
import { isSystemError } from '../native/errors.js';
import { formatSize } from '../util/format.js';
import { Falloc, Madvise, MapFlag, Mfd, MiB, GiB, hugeFlag } from './constants.js';
import { hugepagePool, reserveRemedy } from './hugepages.js';
import { Mapping } from './mapping.js';

/** The backing sources of the kernel's demand_paging_test, plus guest_memfd. */
export const BACKING_SOURCES = [
  'anonymous',
  'anonymous_thp',
  'anonymous_hugetlb',
  'anonymous_hugetlb_1gb',
  'shmem',
  'shared_hugetlb',
  'shared_hugetlb_1gb',
  'guest_memfd',
] as const;
export type BackingSourceName = (typeof BACKING_SOURCES)[number];

/** What is fixed about a backing source, before any memory exists. */
export interface BackingSourceInfo {
  readonly name: BackingSourceName;
  /** The unit a fault is resolved in (UFFDIO_COPY/CONTINUE length), and the alignment of regions. */
  readonly pageSize: number;
  /** Shared memory: mappable twice, so pages can be filled through an unregistered alias (MINOR faults). */
  readonly shared: boolean;
  readonly hugetlb: boolean;
  readonly description: string;
}

const BASE = 4096;
/** lseek whence value (unistd.h). */
const SEEK_DATA = 3;
const SEEK_HOLE = 4;

export const BACKING_INFO: Readonly<Record<BackingSourceName, BackingSourceInfo>> = {
  anonymous: { name: 'anonymous', pageSize: BASE, shared: false, hugetlb: false, description: 'private anonymous memory' },
  anonymous_thp: { name: 'anonymous_thp', pageSize: 2 * MiB, shared: false, hugetlb: false, description: 'private anonymous memory, transparent huge pages' },
  anonymous_hugetlb: { name: 'anonymous_hugetlb', pageSize: 2 * MiB, shared: false, hugetlb: true, description: 'private anonymous hugetlb, 2 MiB pages' },
  anonymous_hugetlb_1gb: { name: 'anonymous_hugetlb_1gb', pageSize: GiB, shared: false, hugetlb: true, description: 'private anonymous hugetlb, 1 GiB pages' },
  shmem: { name: 'shmem', pageSize: BASE, shared: true, hugetlb: false, description: 'shared memory (memfd), mapped twice' },
  shared_hugetlb: { name: 'shared_hugetlb', pageSize: 2 * MiB, shared: true, hugetlb: true, description: 'shared hugetlbfs memory (memfd, 2 MiB pages), mapped twice' },
  shared_hugetlb_1gb: { name: 'shared_hugetlb_1gb', pageSize: GiB, shared: true, hugetlb: true, description: 'shared hugetlbfs memory (memfd, 1 GiB pages), mapped twice' },
  guest_memfd: { name: 'guest_memfd', pageSize: BASE, shared: true, hugetlb: false, description: 'KVM guest_memfd with MMAP, mapped twice' },
};

export function isBackingSource(name: string): name is BackingSourceName {
  return (BACKING_SOURCES as readonly string[]).includes(name);
}

export interface BackingOptions {
  /** guest_memfd only: creates a guest_memfd of `size` bytes (see kvm/guest-memfd.ts). */
  createGuestMemfd?: (size: number) => number;
  /** A name for the memfd, seen in /proc/<pid>/maps. */
  name?: string;
  /**
   * `anonymous` only: map the memory at this address (MAP_FIXED), inside a range the caller
   * reserved for it (a restorer's, whose threads already hold views of it).
   */
  at?: number;
}

/**
 * The memory behind one region: the primary mapping (what the guest uses, and what
 * userfaultfd registers) and, for shared sources, an alias mapping of the same pages that
 * is never registered, through which pages are filled before UFFDIO_CONTINUE.
 */
export class Backing {
  readonly info: BackingSourceInfo;
  readonly size: number;
  /** The memfd or guest_memfd behind a shared source; -1 for private memory. */
  readonly fd: number;
  readonly primary: Mapping;
  readonly alias: Mapping | undefined;
  #closed = false;

  private constructor(info: BackingSourceInfo, size: number, fd: number, primary: Mapping, alias: Mapping | undefined) {
    this.info = info;
    this.size = size;
    this.fd = fd;
    this.primary = primary;
    this.alias = alias;
  }

  static create(source: BackingSourceName, size: number, options: BackingOptions = {}): Backing {
    oneOf('Backing.create', 'source', source, BACKING_SOURCES);
    const info = BACKING_INFO[source];
    if (typeof size !== 'number' || !Number.isSafeInteger(size) || size <= 0 || size % info.pageSize !== 0) {
      throw new ArgumentError('size', `Backing.create: size must be a positive multiple of ${source}'s page size (${formatSize(info.pageSize)}), got ${describe(size)}`);
    }
    const o = optionsArg<BackingOptions>('Backing.create', 'options', options);
    if (o.at !== undefined && source !== 'anonymous') throw new InvalidArgumentError(`Backing.create: options.at places anonymous memory only, not ${source}`);
    if (o.createGuestMemfd !== undefined && typeof o.createGuestMemfd !== 'function') {
      throw new ArgumentError('options.createGuestMemfd', `Backing.create: options.createGuestMemfd must be a function (size) => fd, got ${describe(o.createGuestMemfd)}`);
    }
    if (o.name !== undefined && (typeof o.name !== 'string' || o.name.length > 249 || o.name.includes('/'))) {
      throw new ArgumentError('options.name', `Backing.create: options.name must be a string of at most 249 characters without '/' (a memfd name), got ${describe(o.name)}`);
    }
    if (info.hugetlb) checkHugepages(info, size);
    const name = o.name ?? `postcopy-${source}`;
    try {
      switch (source) {
        case 'anonymous':
          return new Backing(info, size, -1, Mapping.map(size, { flags: MapFlag.PRIVATE | MapFlag.ANONYMOUS | (o.at === undefined ? 0 : MapFlag.FIXED), ...(o.at === undefined ? {} : { address: o.at }) }), undefined);
        case 'anonymous_thp': {
          const m = Mapping.mapAlignedAnonymous(size, info.pageSize, MapFlag.PRIVATE);
          m.advise(Madvise.HUGEPAGE);
          return new Backing(info, size, -1, m, undefined);
        }
        case 'anonymous_hugetlb':
        case 'anonymous_hugetlb_1gb':
          return new Backing(info, size, -1, Mapping.map(size, { flags: MapFlag.PRIVATE | MapFlag.ANONYMOUS | MapFlag.HUGETLB | hugeFlag(info.pageSize) }), undefined);
        case 'shmem':
          return Backing.#shared(info, size, native.memfdCreate(name, Mfd.CLOEXEC));
        case 'shared_hugetlb':
        case 'shared_hugetlb_1gb':
          return Backing.#shared(info, size, native.memfdCreate(name, Mfd.CLOEXEC | Mfd.HUGETLB | hugeFlag(info.pageSize)));
        case 'guest_memfd': {
          if (!o.createGuestMemfd) {
            throw new InvalidArgumentError('guest_memfd: a guest_memfd comes from a KVM VM; pass createGuestMemfd (see createGuestMemfd in kvm/)');
          }
          return Backing.#shared(info, size, o.createGuestMemfd(size), false);
        }
      }
    } catch (e) {
      if (info.hugetlb && isSystemError(e, 'ENOMEM')) {
        throw new UnsupportedError(`${source}: not enough ${formatSize(info.pageSize)} hugepages for ${formatSize(size)}`, reserveRemedy(info.pageSize, size / info.pageSize));
      }
      throw e;
    }
  }

  /**
   * A file in shared memory (tmpfs, hugetlbfs) mapped shared, twice, as guest memory: writes
   * go to the file itself. Takes ownership of `fd` (open read-write), closed with the backing.
   */
  static sharedFile(fd: number, size: number, options: { pageSize: number; hugetlb: boolean; at?: number }): Backing {
    integer('Backing.sharedFile', 'fd', fd, { min: 0, max: 0x7fff_ffff });
    const o = optionsArg<{ pageSize: number; hugetlb: boolean; at?: number }>('Backing.sharedFile', 'options', options);
    const pageSize = integer('Backing.sharedFile', 'options.pageSize', o.pageSize, { min: BASE, max: GiB });
    integer('Backing.sharedFile', 'size', size, { min: pageSize, multipleOf: pageSize, unit: `the page size (${pageSize})` });
    const info: BackingSourceInfo = {
      name: o.hugetlb ? 'shared_hugetlb' : 'shmem',
      pageSize,
      shared: true,
      hugetlb: o.hugetlb === true,
      description: `a file in ${o.hugetlb ? 'hugetlbfs' : 'shared memory'} mapped shared (the guest writes into it)`,
    };
    return Backing.#shared(info, size, fd, false, o.at);
  }

  /** `at`: the primary mapping goes there (MAP_FIXED, inside a range the caller reserved). */
  static #shared(info: BackingSourceInfo, size: number, fd: number, truncate = true, at?: number): Backing {
    try {
      if (truncate) native.ftruncate(fd, size);
      const primary = Mapping.map(size, { flags: MapFlag.SHARED | (at === undefined ? 0 : MapFlag.FIXED), fd, ...(at === undefined ? {} : { address: at }) });
      try {
        const alias = Mapping.map(size, { flags: MapFlag.SHARED, fd });
        return new Backing(info, size, fd, primary, alias);
      } catch (e) {
        primary.unmap();
        throw e;
      }
    } catch (e) {
      native.close(fd);
      throw e;
    }
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** [offset, offset+length) is a non-empty part of this backing, which is open. */
  #checkPart(op: string, offset: number, length: number): void {
    if (this.#closed) throw new ClosedError(`${this.info.name} backing`, op);
    integer(op, 'offset', offset, { min: 0, max: this.size });
    integer(op, 'length', length, { min: 1, max: this.size - offset });
  }

  /**
   * Drops the pages of [offset, offset+length), so the next touch through the primary
   * mapping faults again as MISSING: MADV_DONTNEED for private memory, a punched hole
   * in the file (which empties both mappings) for shared memory.
   */
  discard(offset: number, length: number): void {
    this.#checkPart('discard', offset, length);
    if (offset % this.info.pageSize !== 0 || length % this.info.pageSize !== 0) {
      throw new InvalidArgumentError(`discard: [+${offset}, +${offset + length}) is not aligned to ${formatSize(this.info.pageSize)} pages`);
    }
    if (this.fd < 0) this.primary.advise(Madvise.DONTNEED, offset, length);
    else native.fallocate(this.fd, Falloc.PUNCH_HOLE | Falloc.KEEP_SIZE, offset, length);
  }

  /**
   * Drops only the primary mapping's page-table entries for [offset, offset+length),
   * keeping the shared pages: the next touch through the primary mapping is a MINOR
   * fault. Shared sources only.
   */
  unmapPrimary(offset: number, length: number): void {
    if (!this.info.shared) throw new InvalidArgumentError(`unmapPrimary: ${this.info.name} is private memory; use discard()`);
    this.#checkPart('unmapPrimary', offset, length);
    this.primary.advise(Madvise.DONTNEED, offset, length);
  }

  /**
   * The first byte offset at or after `offset` that holds data (SEEK_DATA on the memfd), or
   * `size` if none: the pages before it were never written (a hole) and read as zeros, and
   * reading them through a mapping would allocate them. Private memory, and files whose
   * filesystem does not answer SEEK_DATA, are all data (`offset` itself). The kernel scans
   * a hole to its end: callers walking a range should remember the answer (see
   * apps/migrate's source), not ask again for every page of the same hole.
   */
  nextData(offset: number): number {
    integer('nextData', 'offset', offset, { min: 0, max: this.size });
    if (this.fd < 0) return offset;
    try {
      const at = native.lseek(this.fd, offset, SEEK_DATA);
      return at < 0 ? this.size : at;
    } catch (e) {
      if (isSystemError(e, 'EINVAL', 'EOPNOTSUPP')) return offset;
      throw e;
    }
  }

  /**
   * The first byte offset at or after `offset` that is a hole (SEEK_HOLE on the memfd), or
   * `size`: [offset, nextHole(offset)) holds data. With nextData, a walk learns a whole
   * extent per two calls instead of asking at every page. Private memory, and files whose
   * filesystem does not answer, are all data (`size`).
   */
  nextHole(offset: number): number {
    integer('nextHole', 'offset', offset, { min: 0, max: this.size });
    if (this.fd < 0 || offset === this.size) return this.size;
    try {
      const at = native.lseek(this.fd, offset, SEEK_HOLE);
      return at < 0 ? this.size : Math.min(this.size, at);
    } catch (e) {
      if (isSystemError(e, 'EINVAL', 'EOPNOTSUPP')) return this.size;
      throw e;
    }
  }

  /** Unmaps both mappings and closes the fd. Safe twice. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.alias?.unmap();
    this.primary.unmap();
    if (this.fd >= 0) native.close(this.fd);
  }
}

function checkHugepages(info: BackingSourceInfo, size: number): void {
  const pool = hugepagePool(info.pageSize);
  const need = size / info.pageSize;
  if (!pool.exists) {
    throw new UnsupportedError(`${info.name}: this kernel has no ${formatSize(info.pageSize)} hugepage pool`, 'Use a 2 MiB source, or boot with hugepagesz=1G');
  }
  if (pool.available < need) {
    throw new UnsupportedError(
      `${info.name}: ${formatSize(size)} needs ${need} ${formatSize(info.pageSize)} hugepages, ${pool.available} are available`,
      reserveRemedy(info.pageSize, need - pool.available),
    );
  }
}
