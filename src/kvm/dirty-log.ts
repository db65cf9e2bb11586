/**
 * KVM dirty logging of one memory slot, with manual clearing (KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2):
 * fetch() copies the slot's dirty bitmap (KVM_GET_DIRTY_LOG, which then leaves the bits and
 * the write protection alone), clear() re-protects exactly the pages fetched
 * (KVM_CLEAR_DIRTY_LOG). A migration round is fetch, clear, then read the pages: a write
 * after the clear sets its bit again, so no write falls between two rounds.
 *
 * The bitmap lives in its own anonymous mapping: the ioctl structs carry its address.
 */
import { InvalidArgumentError } from '../errors.js';
import { MapFlag } from '../memory/constants.js';
import { Mapping } from '../memory/mapping.js';
import { native } from '../native/binding.js';
import { DirtyLogFlag, KvmCap, KvmIoctl, StructSize } from './constants.js';
import type { Vm } from './vm.js';

const PAGE = 4096;

/**
 * Turns on manual clearing for `vm`, with bitmaps that start all set (the first round then
 * sends every page without write-protecting the whole slot at once). Call before any slot
 * gets KVM_MEM_LOG_DIRTY_PAGES.
 */
export function enableManualDirtyLog(vm: Vm): void {
  const offered = vm.checkExtension(KvmCap.KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2);
  const wanted = DirtyLogFlag.KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE | DirtyLogFlag.KVM_DIRTY_LOG_INITIALLY_SET;
  if ((offered & wanted) !== wanted) {
    throw new InvalidArgumentError(`KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 offers 0x${offered.toString(16)}, not 0x${wanted.toString(16)}: this kernel is too old to migrate (Linux 5.8+)`);
  }
  vm.enableCap(KvmCap.KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, [BigInt(wanted)]);
}

export class DirtyLog {
  readonly slot: number;
  readonly pages: number;
  readonly #vm: Vm;
  readonly #bitmap: Mapping;
  /** The bitmap as 64-bit words: bit i of the slot is bit (i % 64) of word i / 64. */
  readonly words: BigUint64Array;
  readonly #get = new Uint8Array(StructSize.kvm_dirty_log);
  readonly #clear = new Uint8Array(StructSize.kvm_clear_dirty_log);

  /** Logging of slot `slot` (`size` bytes) of `vm`; the slot must have KVM_MEM_LOG_DIRTY_PAGES. */
  constructor(vm: Vm, slot: number, size: number) {
    if (size % PAGE !== 0 || size <= 0) throw new InvalidArgumentError(`dirty log: slot size ${size} is not a positive multiple of ${PAGE}`);
    this.#vm = vm;
    this.slot = slot;
    this.pages = size / PAGE;
    const bytes = Math.ceil(this.pages / 64) * 8;
    this.#bitmap = Mapping.map(Math.ceil(bytes / PAGE) * PAGE, { flags: MapFlag.PRIVATE | MapFlag.ANONYMOUS });
    const view = this.#bitmap.bytes();
    this.words = new BigUint64Array(view.buffer, view.byteOffset, bytes / 8);
    const get = new DataView(this.#get.buffer);
    get.setUint32(0, slot, true);
    get.setBigUint64(8, BigInt(this.#bitmap.address), true);
    const clear = new DataView(this.#clear.buffer);
    clear.setUint32(0, slot, true);
    clear.setBigUint64(16, BigInt(this.#bitmap.address), true);
  }

  /** KVM_GET_DIRTY_LOG into `words`; returns how many pages are dirty. */
  fetch(): number {
    native.ioctl(this.#vm.fd, KvmIoctl.KVM_GET_DIRTY_LOG, this.#get, 'KVM_GET_DIRTY_LOG');
    return countBits(this.words);
  }

  /** KVM_CLEAR_DIRTY_LOG of the bits in `words` (what fetch() returned), over the whole slot. */
  clear(): void {
    const view = new DataView(this.#clear.buffer);
    view.setUint32(4, this.pages, true);
    view.setBigUint64(8, 0n, true);
    native.ioctl(this.#vm.fd, KvmIoctl.KVM_CLEAR_DIRTY_LOG, this.#clear, 'KVM_CLEAR_DIRTY_LOG');
  }

  /** Unmaps the bitmap. Safe twice. */
  close(): void {
    this.#bitmap.unmap();
  }
}

/** Set bits in `words`. */
export function countBits(words: BigUint64Array): number {
  let n = 0;
  const halves = new Uint32Array(words.buffer, words.byteOffset, words.length * 2);
  for (let i = 0; i < halves.length; i++) {
    let v = halves[i]!;
    if (v === 0) continue;
    v = v - ((v >>> 1) & 0x55555555);
    v = (v & 0x33333333) + ((v >>> 2) & 0x33333333);
    n += (((v + (v >>> 4)) & 0x0f0f0f0f) * 0x01010101) >>> 24;
  }
  return n;
}
