import { hva, type HostAddress } from '../address.js';
import { ClosedError, InvalidArgumentError } from '../errors.js';
import { integer, options as optionsArg } from '../native/args.js';
import { native } from '../native/binding.js';
import { formatRange } from '../util/format.js';
import { MapFlag, Prot } from './constants.js';

const PAGE = 4096;

/**
 * A mapping as another thread can be told of it: plain numbers, so it goes through
 * postMessage and workerData as it is (structured clone copies two numbers, not the
 * memory). Mapping.fromHandle opens it in the thread that receives it. It owns nothing:
 * the mapping stays the creating thread's, which must keep it mapped while any thread
 * uses it (after unmap, a view opened elsewhere touches unmapped memory: SIGSEGV).
 */
export interface MappingHandle {
  readonly address: number;
  readonly length: number;
}

/**
 * One mmap'ed range. Bytes are read and written through views (Uint8Array over the
 * mapping); unmap() detaches every view this Mapping made first, so a stale view throws a
 * TypeError instead of touching memory that is gone.
 *
 * Other threads: pass `mapping.handle()` (or a part of it) and open it there with
 * `Mapping.fromHandle`. Never pass a view (`bytes()`) itself: a view is not shared memory,
 * so postMessage/workerData copy it, reading every page on the sending thread; on a range
 * registered with userfaultfd each of those reads is a fault that the sending thread waits
 * on, which hangs it when nothing resolves them, and the worker gets a copy, not the memory.
 */
export class Mapping {
  readonly address: HostAddress;
  readonly length: number;
  /** False for a Mapping opened from a handle: unmap() then only detaches its views. */
  readonly owned: boolean;
  #views: ArrayBuffer[] = [];
  #unmapped = false;

  constructor(address: HostAddress, length: number, owned = true) {
    integer('new Mapping', 'address', address, { min: 1, multipleOf: PAGE, unit: `the page size (${PAGE})` });
    integer('new Mapping', 'length', length, { min: 1 });
    this.address = address;
    this.length = length;
    this.owned = owned;
  }

  /**
   * Opens, in this thread, a mapping another thread made (see MappingHandle). The result
   * does not own it: unmap() (or release()) detaches the views made here and leaves the
   * memory mapped for its owner.
   */
  static fromHandle(handle: MappingHandle): Mapping {
    const h = optionsArg<MappingHandle>('Mapping.fromHandle', 'handle', handle);
    if (h.address === undefined || h.length === undefined) {
      throw new InvalidArgumentError('Mapping.fromHandle: handle must be what Mapping.handle() returns ({ address, length })');
    }
    integer('Mapping.fromHandle', 'handle.address', h.address, { min: 1, multipleOf: PAGE, unit: `the page size (${PAGE})` });
    integer('Mapping.fromHandle', 'handle.length', h.length, { min: 1 });
    return new Mapping(hva(h.address), h.length, false);
  }

  /**
   * A handle for [offset, offset+length) of this mapping (all of it by default) that
   * another thread opens with Mapping.fromHandle. offset must be page-aligned.
   */
  handle(offset = 0, length = this.length - offset): MappingHandle {
    this.#check('handle', offset, length);
    if (offset % PAGE !== 0 || length === 0) {
      throw new InvalidArgumentError(`handle: offset must be a multiple of the page size (${PAGE}) and length positive, got offset ${offset}, length ${length}`);
    }
    return { address: this.address + offset, length };
  }

  /** mmap(2). `fd` -1 for anonymous memory. */
  static map(length: number, options: { prot?: number; flags: number; fd?: number; offset?: number; address?: number }): Mapping {
    const where = 'Mapping.map';
    integer(where, 'length', length, { min: 1 });
    const o = optionsArg<typeof options>(where, 'options', options);
    const prot = integer(where, 'options.prot', o.prot ?? Prot.READ | Prot.WRITE, { min: 0, max: 0x7fff_ffff });
    const flags = integer(where, 'options.flags', o.flags, { min: 0, max: 0x7fff_ffff });
    const fd = integer(where, 'options.fd', o.fd ?? -1, { min: -1, max: 0x7fff_ffff });
    const offset = integer(where, 'options.offset', o.offset ?? 0, { min: 0, multipleOf: PAGE, unit: `the page size (${PAGE})` });
    const address = integer(where, 'options.address', o.address ?? 0, { min: 0, multipleOf: PAGE, unit: `the page size (${PAGE})` });
    const addr = native.mmap(address, length, prot, flags, fd, offset);
    return new Mapping(hva(addr), length);
  }

  /**
   * Anonymous memory aligned to `alignment` (mmap gives only base-page alignment): maps
   * length + alignment and trims both ends, as THP needs 2 MiB-aligned ranges.
   */
  static mapAlignedAnonymous(length: number, alignment: number, flags: number): Mapping {
    integer('Mapping.mapAlignedAnonymous', 'length', length, { min: 1 });
    integer('Mapping.mapAlignedAnonymous', 'alignment', alignment, { min: PAGE, multipleOf: PAGE, unit: `the page size (${PAGE})` });
    integer('Mapping.mapAlignedAnonymous', 'flags', flags, { min: 0, max: 0x7fff_ffff });
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
    if (!(Number.isSafeInteger(offset) && offset >= 0 && offset <= this.length)) {
      throw new InvalidArgumentError(`at: offset ${String(offset)} is outside the mapping ${formatRange(this.address, this.length)} (0 to ${this.length})`);
    }
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

  /**
   * A Uint8Array over [offset, offset+length) of the mapping. Touching it may fault. It is
   * for this thread: to another thread pass handle() instead (see the class comment; a
   * view sent by postMessage or workerData is copied, page by page, faulting).
   */
  bytes(offset = 0, length = this.length - offset): Uint8Array {
    this.#check('bytes', offset, length);
    const buffer = native.view(this.address + offset, length);
    this.#views.push(buffer);
    return new Uint8Array(buffer);
  }

  /** madvise(2) over [offset, offset+length). */
  advise(advice: number, offset = 0, length = this.length - offset): void {
    this.#check('advise', offset, length);
    integer('advise', 'advice', advice, { min: 0, max: 0x7fff_ffff });
    native.madvise(this.address + offset, length, advice);
  }

  /** Detaches all views and unmaps (a Mapping opened from a handle: only detaches). Safe twice. */
  unmap(): void {
    if (this.#unmapped) return;
    this.#unmapped = true;
    for (const b of this.#views) native.detach(b);
    this.#views = [];
    if (this.owned) native.munmap(this.address, this.length);
  }

  /** For a Mapping opened from a handle: done with it here (its views detached). Same as unmap(). */
  release(): void {
    this.unmap();
  }
}
