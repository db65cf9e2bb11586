/**
 * The DirtyTracker face of KVM dirty logging of one memory slot (src/kvm/dirty-log.ts):
 * KVM_GET_DIRTY_LOG, then KVM_CLEAR_DIRTY_LOG of exactly the pages fetched. It sees the
 * guest's writes (through KVM's second-level page tables), not the host's. With
 * KVM_DIRTY_LOG_INITIALLY_SET (enableManualDirtyLog) the slot's bitmap starts all set, so
 * the first collection reports every page, as the interface asks.
 */
import { ClosedError } from '../errors.js';
import type { DirtyLog } from '../kvm/dirty-log.js';
import type { DirtyTracker } from './tracker.js';

export class KvmDirtyLogTracker implements DirtyTracker {
  readonly name = 'kvm-dirty-log' as const;
  readonly pages: number;
  readonly #log: DirtyLog;
  #closed = false;

  /** Takes over `log`: close() closes it. */
  constructor(log: DirtyLog) {
    this.#log = log;
    this.pages = log.pages;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Fetch, then clear what was fetched: a write after the fetch either lands before the
   * clear (its page is in this set, and is read after this call) or sets its bit again
   * after it (next set). The words are the log's bitmap, overwritten by the next call.
   */
  collect(): BigUint64Array {
    if (this.#closed) throw new ClosedError(`kvm-dirty-log tracker of slot ${this.#log.slot}`, 'collect');
    this.#log.fetch();
    this.#log.clear();
    return this.#log.words;
  }

  /** Unmaps the log's bitmap; the slot keeps KVM_MEM_LOG_DIRTY_PAGES until it changes. Safe twice. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#log.close();
  }
}
