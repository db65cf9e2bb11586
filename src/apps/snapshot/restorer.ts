/**
 * The threads a restore runs on, started before the snapshot is opened: the guest's worker
 * threads (threads guest) and the page server's. A Node worker takes tens of ms of CPU to
 * start; started after the open, that is nearly all of the time to resume. A restorer is
 * what a VMM process is before its snapshot load request: sized for the machine, not for a
 * snapshot it has not seen (a snapshot with more workers starts the rest itself; a KVM
 * snapshot's vCPU threads are not prestarted and these are discarded).
 *
 * It also reserves address space for the guest's memory (PROT_NONE, no memory behind it) of
 * which the guest threads make their views in advance: a restore of up to that size maps
 * the guest's memory there (MAP_FIXED), so no thread makes a multi-GiB view after the open.
 */

/** The most memory a prestarted guest thread can view in advance (one ArrayBuffer's limit). */
export const RESERVED_BYTES = 2 ** 32;
import { availableParallelism } from 'node:os';
import type { ReservedRange } from '../../guest/threads/layout.js';
import { MapFlag, Prot } from '../../memory/constants.js';
import { native } from '../../native/binding.js';
import { ThreadsGuest } from '../../guest/threads/threads-guest.js';
import type { PrestartedWorker } from '../../util/prestarted-worker.js';
import { PageServer } from './page-server.js';

export class Restorer {
  /** Taken from by the threads guest (GuestCreateOptions.workers). */
  readonly guestWorkers: PrestartedWorker[];
  #pageServer: PrestartedWorker | undefined;
  readonly #all: PrestartedWorker[];
  /** How long starting them took (ms), reported beside the time to resume. */
  readonly startMs: number;
  /** Where the guest's memory goes to be in the threads' views (anonymous memory of up to RESERVED_BYTES). */
  readonly reserved: ReservedRange;
  /** The reservation's head was handed to a guest's memory (claim()); its tail is gone. */
  #claimed = false;

  private constructor(guestWorkers: PrestartedWorker[], pageServer: PrestartedWorker, startMs: number, reserved: ReservedRange) {
    this.reserved = reserved;
    this.guestWorkers = [...guestWorkers];
    this.#pageServer = pageServer;
    this.#all = [...guestWorkers, pageServer];
    this.startMs = startMs;
  }

  /** Starts `workers` guest threads (default: one per CPU) and a page server thread; resolves when all wait. */
  static async prestart(workers = availableParallelism()): Promise<Restorer> {
    const t0 = performance.now();
    // Raw mmap, not a Mapping: this thread makes no view of it, and its head is handed on.
    const reserved = { address: native.mmap(0, RESERVED_BYTES, Prot.NONE, MapFlag.PRIVATE | MapFlag.ANONYMOUS | MapFlag.NORESERVE, -1, 0), bytes: RESERVED_BYTES };
    const guest = ThreadsGuest.prestart(workers, reserved);
    const server = PageServer.prestart();
    const all = [...guest, server];
    try {
      await Promise.all(all.map((w) => w.waiting));
    } catch (e) {
      await Promise.all(all.map((w) => w.discard()));
      native.munmap(reserved.address, reserved.bytes);
      throw e;
    }
    return new Restorer(guest, server, performance.now() - t0, reserved);
  }

  /**
   * The address where anonymous guest memory of `size` bytes goes to be in the guest threads'
   * views (Backing.create's `at`), once; undefined if it does not fit. The rest of the range
   * is given back now, so nothing else is ever mapped inside what this restorer unmaps.
   */
  claim(size: number): number | undefined {
    if (this.#claimed || size > this.reserved.bytes) return undefined;
    this.#claimed = true;
    if (size < this.reserved.bytes) native.munmap(this.reserved.address + size, this.reserved.bytes - size);
    return this.reserved.address;
  }

  /** The page server thread, once. */
  takePageServer(): PrestartedWorker | undefined {
    const p = this.#pageServer;
    this.#pageServer = undefined;
    return p;
  }

  /** Ends the threads no restore took and gives back the reserved range unless a guest's memory took it (that memory unmaps itself). */
  async close(): Promise<void> {
    await Promise.all(this.#all.map((w) => w.discard()));
    if (!this.#claimed) {
      this.#claimed = true;
      native.munmap(this.reserved.address, this.reserved.bytes);
    }
  }
}
