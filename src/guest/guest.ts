/**
 * What a migration (and a snapshot) needs of a guest, whichever backend runs it: the
 * workload of the migrate program (each worker loops over its slice for ever; on pass p
 * it checks each page's counter holds p - 1 and writes p; it times its own progress; it
 * stops at a pause word between two accesses) over memory in a Backing.
 *
 * Two backends: `kvm` (vCPUs in a KVM VM running the migrate program; state = kvm_regs +
 * kvm_sregs) and `threads` (worker threads in this process doing the same work over the
 * backing's primary mapping; state = the program's registers as plain fields). Nothing
 * that drives a guest (apps/migrate, apps/snapshot) knows which one runs.
 */
import type { MigrateState } from '../kvm/guest/migrate-program.js';
import type { Backing, BackingSourceName } from '../memory/backing.js';
import type { DirtyTracker, TrackerName } from '../tracking/tracker.js';
import type { PrestartedWorker } from '../util/prestarted-worker.js';
import type { SlicePlan, Workload } from './workload.js';

export type GuestBackendName = 'kvm' | 'threads';
export const GUEST_BACKENDS: readonly GuestBackendName[] = ['kvm', 'threads'];

/** The size of a guest page the workload touches (one counter per 4 KiB page). */
export const GUEST_PAGE = 4096;

export interface GuestShape {
  readonly source: BackingSourceName;
  readonly size: number;
  /** Workers (vCPUs or threads); each owns an equal slice of the memory. */
  readonly vcpus: number;
  /** Guest-physical start of the memory (above the system slot for KVM; a label for threads). */
  readonly guestAddress: number;
  /** What the workers touch each pass (workload.ts); undefined: a sweep of every page (the migrate program). */
  readonly workload?: Workload;
}

/**
 * A worker's progress, as the migrate program keeps it (KVM: in its registers; threads: in
 * its state slot). One definition, the program's: both backends run the same workload.
 * `lastTsc` and the gap fields are in the guest's clock ticks (see GuestClock).
 */
export type WorkerState = MigrateState;

/** The guest's own clock: the TSC for KVM, CLOCK_MONOTONIC ns for threads. */
export interface GuestClock {
  readonly ticks: bigint;
  readonly ticksPerMs: number;
}

export interface GuestCreateOptions {
  /** The source's dirty tracker (undefined on a destination). */
  readonly tracking?: TrackerName;
  /**
   * Memory to run over instead of a new Backing of shape.source (a snapshot restored from a
   * file mapped copy-on-write): the guest owns it from here and closes it. Its size and page
   * size must fit the shape.
   */
  readonly backing?: Backing;
  /**
   * Threads guest: worker threads started earlier (ThreadsGuest.prestart), used first and
   * taken out of the array; the rest are spawned. The kvm guest ignores them.
   */
  readonly workers?: PrestartedWorker[];
}

export interface MigratableGuest {
  readonly backend: GuestBackendName;
  readonly shape: GuestShape;
  readonly backing: Backing;
  /** The backing's page size: the unit pages move in and faults are resolved in. */
  readonly unit: number;
  /** Bytes of one worker's saved state (save()/load()); fixed per backend. */
  readonly stateBytes: number;
  /** The trackers this guest can be created with. */
  readonly trackers: readonly TrackerName[];
  /** Worker threads exist (running, or armed and waiting at the gate). */
  readonly running: boolean;
  /** The tracker asked for at creation (source), or undefined. */
  readonly tracker: DirtyTracker | undefined;
  /** What each worker touches, pass by pass, over its slice (the oracle and the restore read it). */
  readonly plan: SlicePlan;

  /** Allocates and maps the pages arriving bytes will be written to (see kvm guest); false if the kernel cannot. */
  populate(): boolean;
  /** Worker i's slice: its first guest address and its 4 KiB pages. */
  slice(i: number): { guestAddress: number; pages: number };
  /** Spawns every worker, waiting at a start gate (a destination does this before the switchover). */
  arm(): Promise<void>;
  /** Opens the gate: every worker runs now. Returns the workers' kernel thread ids, by worker. */
  go(): number[];
  /** arm() then go(). */
  run(): Promise<number[]>;
  /** Sets the pause word and waits until every worker has stopped between two accesses. */
  pause(): Promise<void>;
  /** Every worker's state, paused. */
  states(): WorkerState[];
  /** Every worker's whole state as bytes (stateBytes each), paused: what crosses the wire. */
  save(): Uint8Array[];
  /**
   * Loads saved states. `resetStall` zeroes the longest-gap record but keeps the clock of
   * the last access: the first access after resuming then measures the whole pause.
   */
  load(states: readonly Uint8Array[], options?: { resetStall?: boolean }): void;
  /** Decodes one saved state without loading it (the source reports what it sent). */
  decodeState(state: Uint8Array): WorkerState;
  clock(): GuestClock;
  /** Sets the guest's clock (KVM may keep its own: read clock() after to know). */
  setClock(ticks: bigint): void;
  /** Closes workers' resources, the tracker and the memory; only paused or stopped. Safe twice. */
  close(): void;
}
