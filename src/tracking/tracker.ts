/**
 * What a migration (or a live snapshot) needs of dirty tracking, whichever mechanism does
 * it: the 4 KiB pages of one range written since the last collection. Two backends:
 * `kvm-dirty-log` (KVM_GET_DIRTY_LOG + manual KVM_CLEAR_DIRTY_LOG of a memory slot: sees
 * a KVM guest's writes) and `uffd-wp` (userfaultfd write-protect in async mode, collected
 * and re-protected with one PAGEMAP_SCAN: sees writes through one host mapping, by any
 * thread, no KVM needed).
 *
 * The first collect() after start() reports every page (each tracker starts "all dirty",
 * so round one of precopy sends everything without a special case).
 */
export type TrackerName = 'kvm-dirty-log' | 'uffd-wp';
export const TRACKER_NAMES: readonly TrackerName[] = ['kvm-dirty-log', 'uffd-wp'];

export interface DirtyTracker {
  readonly name: TrackerName;
  /** 4 KiB pages in the tracked range. */
  readonly pages: number;
  /**
   * The pages written since the last collection (since start() for the first: all of
   * them), as bits: page i is bit (i % 64) of word i / 64. Re-arms atomically with the
   * read: a write racing the call is in this set or the next, never lost. The array is
   * the tracker's own and is overwritten by the next collect(); copy what must outlive it.
   */
  collect(): BigUint64Array;
  /** Stops tracking and frees what it holds (write protection removed). Safe twice. */
  close(): void;
}
