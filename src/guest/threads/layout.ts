/**
 * What the threads guest's main thread and its workers share, in SharedArrayBuffers: the
 * control words (pause, start gate, the clock's offset) and one state slot per worker
 * (the migrate program's registers as plain fields). The workers read and write these
 * with Atomics; the slot is written only while its worker is stopped or parked.
 */
export const Control = {
  /** Non-zero: every worker stops between two accesses. */
  PAUSE: 0,
  /** Bumped to let parked workers run (a generation, so a late waiter never misses it). */
  GATE: 1,
  /** Int32 words in the control buffer. */
  WORDS: 2,
} as const;

/** Fields of a worker's slot (BigInt64Array), and of its saved state after the magic word. */
export const Slot = {
  PASS: 0,
  INDEX: 1,
  MISMATCHES: 2,
  FIRST_MISMATCH: 3,
  LAST_TICK: 4,
  MAX_GAP: 5,
  MAX_GAP_END: 6,
  WORDS: 8,
} as const;

/** First word of a saved state: a threads guest's, version 1 ("PCTHRD01"). */
export const STATE_MAGIC = 0x3130445248544350n;
/** Saved state: the magic, then the seven fields, u64 little-endian. */
export const THREADS_STATE_BYTES = 8 * 8;

/** The workers' clock: CLOCK_MONOTONIC-based ns since the epoch (performance.timeOrigin + now()), less the offset setClock() sets. */
export const TICKS_PER_MS = 1e6;

export interface WorkerConfig {
  readonly index: number;
  /** Host address and bytes of this worker's slice of the primary mapping. */
  readonly host: number;
  readonly bytes: number;
  /** Guest address of the slice's first page (what a mismatch reports). */
  readonly guestAddress: number;
  /** The workload (workload.ts SlicePlan): pages a pass after the first writes, and the step between two of its accesses. */
  readonly setPages: number;
  readonly step: number;
  /** A sweep writes every page in order every pass; a working set only its first pass. */
  readonly sweep: boolean;
  readonly control: SharedArrayBuffer;
  /** Float64Array[1]: the clock offset in ms. */
  readonly clock: SharedArrayBuffer;
  /** BigInt64Array of Slot.WORDS per worker. */
  readonly slots: SharedArrayBuffer;
}

/** An address range reserved for a guest's memory before the guest is known (a restorer's), which prestarted workers view in advance. */
export interface ReservedRange {
  readonly address: number;
  readonly bytes: number;
}

export type WorkerMessage = { type: 'ready'; tid: number } | { type: 'paused' };
