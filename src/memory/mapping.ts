import { hva, type HostAddress } from '../address.js';
import { ClosedError, InvalidArgumentError } from '../errors.js';
import { native } from '../native/binding.js';
import { formatRange } from '../util/format.js';
import { MapFlag, Prot } from './constants.js';

/**
 * One mmap'ed range that this process owns. Bytes are read and written through views
 * (Uint8Array over the mapping); unmap() detaches every view first, so a stale view
 * throws a TypeError instead of touching memory that is gone.
 */
export class Mapping {
  readonly address: HostAddress;
  readonly length: number;
  #views: ArrayBuffer[] = [];
  #unmapped = false;

  constructor(address: HostAddress, length: number) {
    this.address = address;
    this.length = length;
  }

  /** mmap(2). `fd` -1 for anonymous memory. */
  static map(length: number, options: { prot?: number; flags: number; fd?: number; offset?: number; address?: number }): Mapping {
    const prot = options.prot ?? Prot.READ | Prot.WRITE;
    const addr = native.mmap(options.address ?? 0, length, prot, options.flags, options.fd ?? -1, options.offset ?? 0);
    return new Mapping(hva(addr), length);
  }

  /**
   * Anonymous memory aligned to `alignment` (mmap gives only base-page alignment): maps
   * length + alignment and trims both ends, as THP needs 2 MiB-aligned ranges.
   */
  static mapAlignedAnonymous(length: number, alignment: number, flags: number): Mapping {
    const span = native.mmap(0, length + alignment, Prot.READ | Prot.WRITE, flags | MapFlag.ANONYMOUS, -1, 0);
    const start = Math.ceil(span / alignment) * alignment;
    if (start > span) native.munmap(span, start - span);
    const tail = span + length + alignment - (start + length);
    if (tail > 0) native.munmap(start + length, tail);
    return new Mapping(hva(start), length);
  }

  get unmapped(): boolean {
    return this.#unmapped;
  }

  /** The address `offset` bytes in. */
  at(offset: number): HostAddress {
    return hva(this.address + offset);
  }

  #check(op: string, offset: number, length: number): void {
    if (this.#unmapped) throw new ClosedError(`mapping ${formatRange(this.address, this.length)}`, op);
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.length) {
      throw new InvalidArgumentError(
        `${op}: [+${offset}, +${offset + length}) is outside the mapping ${formatRange(this.address, this.length)}`,
      );
    }
  }

  /** A Uint8Array over [offset, offset+length) of the mapping. Touching it may fault. */
  bytes(offset = 0, length = this.length - offset): Uint8Array {
    this.#check('bytes', offset, length);
    const buffer = native.view(this.address + offset, length);
    this.#views.push(buffer);
    return new Uint8Array(buffer);
  }

  /** madvise(2) over [offset, offset+length). */
  advise(advice: number, offset = 0, length = this.length - offset): void {
    this.#check('advise', offset, length);
    native.madvise(this.address + offset, length, advice);
  }

  /** Detaches all views and unmaps. Safe twice. */
  unmap(): void {
    if (this.#unmapped) return;
    this.#unmapped = true;
    for (const b of this.#views) native.detach(b);
    this.#views = [];
    native.munmap(this.address, this.length);
  }
}
