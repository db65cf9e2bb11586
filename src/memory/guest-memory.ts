import { gpa, hva, type GuestAddress, type HostAddress } from '../address.js';
import { ClosedError, InvalidArgumentError } from '../errors.js';
import { formatRange, formatSize } from '../util/format.js';
import { describe, oneOf } from '../native/args.js';
import { Backing, BACKING_INFO, BACKING_SOURCES, type BackingOptions, type BackingSourceName } from './backing.js';

/** One region of guest-physical memory, as asked for. */
export interface RegionSpec {
  readonly guestAddress: GuestAddress;
  readonly size: number;
  readonly source: BackingSourceName;
}

/** A region of guest memory: a guest-physical range and the host memory behind it. */
export class GuestRegion {
  readonly guestAddress: GuestAddress;
  readonly size: number;
  readonly backing: Backing;

  constructor(guestAddress: GuestAddress, backing: Backing) {
    this.guestAddress = guestAddress;
    this.size = backing.size;
    this.backing = backing;
  }

  get source(): BackingSourceName {
    return this.backing.info.name;
  }
  get pageSize(): number {
    return this.backing.info.pageSize;
  }
  /** Where the guest's view (the mapping given to KVM, registered with userfaultfd) starts. */
  get host(): HostAddress {
    return this.backing.primary.address;
  }
  /** Where the unregistered alias starts (shared sources only). */
  get alias(): HostAddress | undefined {
    return this.backing.alias?.address;
  }
  /** The guest-physical end, exclusive. */
  get end(): GuestAddress {
    return gpa(this.guestAddress + this.size);
  }

  contains(address: GuestAddress): boolean {
    return address >= this.guestAddress && address < this.guestAddress + this.size;
  }

  /** The host-virtual address of guest-physical `address` in the primary mapping. */
  hostAddress(address: GuestAddress): HostAddress {
    return hva(this.host + (address - this.guestAddress));
  }
}

/**
 * Guest memory: regions whose layout is checked once, here: each region aligned to its
 * backing's page size, sizes positive multiples of it, no two regions overlapping.
 */
export class GuestMemory {
  readonly regions: readonly GuestRegion[];
  #closed = false;

  private constructor(regions: GuestRegion[]) {
    this.regions = regions;
  }

  /** Checks the layout, then creates each region's backing. Nothing is left mapped on failure. */
  static create(specs: readonly RegionSpec[], options: BackingOptions = {}): GuestMemory {
    GuestMemory.checkLayout(specs);
    const sorted = [...specs].sort((a, b) => a.guestAddress - b.guestAddress);
    const regions: GuestRegion[] = [];
    try {
      for (const spec of sorted) {
        regions.push(new GuestRegion(spec.guestAddress, Backing.create(spec.source, spec.size, options)));
      }
    } catch (e) {
      for (const r of regions) r.backing.close();
      throw e;
    }
    return new GuestMemory(regions);
  }

  /** Throws InvalidArgumentError naming the first thing wrong with `specs`. */
  static checkLayout(specs: readonly RegionSpec[]): void {
    if (!Array.isArray(specs as unknown)) throw new InvalidArgumentError(`guest memory: specs must be an array of { guestAddress, size, source }, got ${describe(specs)}`);
    if (specs.length === 0) throw new InvalidArgumentError('guest memory needs at least one region');
    specs.forEach((s: unknown, i) => {
      if (s === null || typeof s !== 'object') throw new InvalidArgumentError(`guest memory: specs[${i}] must be { guestAddress, size, source }, got ${describe(s)}`);
      oneOf('guest memory', `specs[${i}].source`, (s as RegionSpec).source, BACKING_SOURCES);
    });
    for (const s of specs) {
      const page = BACKING_INFO[s.source].pageSize;
      if (!Number.isSafeInteger(s.guestAddress) || s.guestAddress < 0) {
        throw new InvalidArgumentError(`region at ${s.guestAddress}: guest address must be a non-negative integer`);
      }
      if (!Number.isSafeInteger(s.size) || s.size <= 0 || s.size % page !== 0) {
        throw new InvalidArgumentError(`region ${formatRange(s.guestAddress, s.size)} (${s.source}): size must be a positive multiple of ${formatSize(page)}`);
      }
      if (s.guestAddress % page !== 0) {
        throw new InvalidArgumentError(`region ${formatRange(s.guestAddress, s.size)} (${s.source}): guest address must be aligned to ${formatSize(page)}`);
      }
    }
    const sorted = [...specs].sort((a, b) => a.guestAddress - b.guestAddress);
    for (let i = 1; i < sorted.length; i++) {
      const a = sorted[i - 1]!;
      const b = sorted[i]!;
      if (b.guestAddress < a.guestAddress + a.size) {
        throw new InvalidArgumentError(`regions ${formatRange(a.guestAddress, a.size)} and ${formatRange(b.guestAddress, b.size)} overlap`);
      }
    }
  }

  #check(op: string): void {
    if (this.#closed) throw new ClosedError('guest memory', op);
  }

  /** The region holding guest-physical `address`. */
  region(address: GuestAddress): GuestRegion {
    this.#check('region');
    const r = this.regions.find((x) => x.contains(address));
    if (!r) throw new InvalidArgumentError(`guest address 0x${address.toString(16)} is in no region`);
    return r;
  }

  /** The host-virtual address (primary mapping) of guest-physical `address`. */
  toHost(address: GuestAddress): HostAddress {
    return this.region(address).hostAddress(address);
  }

  get size(): number {
    return this.regions.reduce((n, r) => n + r.size, 0);
  }

  /** Unmaps every region. Safe twice. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const r of this.regions) r.backing.close();
  }
}
