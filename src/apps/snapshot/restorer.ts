/**
 * The threads a restore runs on, started before the snapshot is opened: the guest's worker
 * threads (threads guest) and the page server's. A Node worker takes tens of ms of CPU to
 * start; started after the open, that is nearly all of the time to resume. A restorer is
 * what a VMM process is before its snapshot load request: sized for the machine, not for a
 * snapshot it has not seen (a snapshot with more workers starts the rest itself; a KVM
 * snapshot's vCPU threads are not prestarted and these are discarded).
 */
import { availableParallelism } from 'node:os';
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

  private constructor(guestWorkers: PrestartedWorker[], pageServer: PrestartedWorker, startMs: number) {
    this.guestWorkers = [...guestWorkers];
    this.#pageServer = pageServer;
    this.#all = [...guestWorkers, pageServer];
    this.startMs = startMs;
  }

  /** Starts `workers` guest threads (default: one per CPU) and a page server thread; resolves when all wait. */
  static async prestart(workers = availableParallelism()): Promise<Restorer> {
    const t0 = performance.now();
    const guest = ThreadsGuest.prestart(workers);
    const server = PageServer.prestart();
    const all = [...guest, server];
    try {
      await Promise.all(all.map((w) => w.waiting));
    } catch (e) {
      await Promise.all(all.map((w) => w.discard()));
      throw e;
    }
    return new Restorer(guest, server, performance.now() - t0);
  }

  /** The page server thread, once. */
  takePageServer(): PrestartedWorker | undefined {
    const p = this.#pageServer;
    this.#pageServer = undefined;
    return p;
  }

  /** Ends the threads no restore took. */
  async close(): Promise<void> {
    await Promise.all(this.#all.map((w) => w.discard()));
  }
}
