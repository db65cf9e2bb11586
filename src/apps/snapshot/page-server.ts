/**
 * Starts and stops the restore's page server thread (page-server.worker.ts) and shares
 * with it what the main thread reads while the guest runs: the placed map, the counters,
 * the order of first faults.
 */
import { Worker } from 'node:worker_threads';
import { native } from '../../native/binding.js';
import type { Userfaultfd } from '../../uffd/userfaultfd.js';
import { Counter, type PlaceMode } from './placement.js';
import type { UnitMap } from './unit-map.js';
import { PrestartedWorker } from '../../util/prestarted-worker.js';

const WORKER_URL = new URL('./page-server.worker.js', import.meta.url);

export interface PageServerConfig {
  fd: number;
  features: bigint;
  ioctls: bigint;
  stopFd: number;
  mode: PlaceMode;
  regionStart: number;
  fileStart: number;
  /** The memory file (read-only), for this thread's FileReader; -1: copy from the mapping. */
  fileFd: number;
  unit: number;
  units: number;
  zeropage: boolean;
  /** SharedArrayBuffers: the data map, the placed map, Counter.WORDS float64s, the record (count, then units). */
  data: SharedArrayBuffer;
  placed: SharedArrayBuffer;
  counters: SharedArrayBuffer;
  record: SharedArrayBuffer;
  /** Int32 [first, count] pairs, in the order to place them. */
  prefetch: SharedArrayBuffer;
  background: boolean;
  /** The prefetch list may start before the guest runs (its half of a prefetch before resume). */
  bulkBeforeGo: boolean;
}

export interface PageServerOptions {
  readonly mode: PlaceMode;
  readonly regionStart: number;
  readonly fileStart: number;
  /** The memory file to read with pread (copy mode), or undefined to copy from the mapping. */
  readonly fileFd?: number | undefined;
  readonly unit: number;
  readonly zeropage: boolean;
  /** Both over SharedArrayBuffers (UnitMap.shared). */
  readonly data: UnitMap;
  readonly placed: UnitMap;
  readonly prefetch: readonly (readonly [first: number, count: number])[];
  readonly background: boolean;
  /** Start the prefetch list at once, before go() (a prefetch before resume shared with the caller's thread). */
  readonly bulkBeforeGo?: boolean;
}

export class PageServer {
  readonly counters: Float64Array;
  readonly #record: Int32Array;
  readonly #worker: Worker;
  readonly #stopFd: number;
  readonly #stopped: Promise<{ cpuNs: number }>;
  #stopping: Promise<{ cpuNs: number }> | undefined;

  private constructor(worker: Worker, stopFd: number, counters: Float64Array, record: Int32Array, stopped: Promise<{ cpuNs: number }>) {
    this.#worker = worker;
    this.#stopFd = stopFd;
    this.counters = counters;
    this.#record = record;
    this.#stopped = stopped;
  }

  /** A page server thread started before its snapshot is known (start() takes it). */
  static prestart(): PrestartedWorker {
    return PrestartedWorker.spawn(WORKER_URL);
  }

  /**
   * Starts the thread (or hands its work to `early`, started by prestart()); resolves once
   * it waits for faults. `onError`: the thread failed (the guest may hang on a fault: the
   * caller stops).
   */
  static async start(uffd: Userfaultfd, o: PageServerOptions, onError: (e: Error) => void, early?: PrestartedWorker): Promise<PageServer> {
    const counters = new Float64Array(new SharedArrayBuffer(Counter.WORDS * 8));
    const record = new Int32Array(new SharedArrayBuffer((o.data.units + 1) * 4));
    const prefetch = new Int32Array(new SharedArrayBuffer(o.prefetch.length * 8));
    o.prefetch.forEach(([first, count], i) => {
      prefetch[i * 2] = first;
      prefetch[i * 2 + 1] = count;
    });
    const stopFd = native.eventfd(0, 0o2000000 /* EFD_CLOEXEC */);
    const config: PageServerConfig = {
      fd: uffd.fd,
      features: uffd.features,
      ioctls: uffd.ioctls,
      stopFd,
      mode: o.mode,
      regionStart: o.regionStart,
      fileStart: o.fileStart,
      fileFd: o.fileFd ?? -1,
      unit: o.unit,
      units: o.data.units,
      zeropage: o.zeropage,
      data: o.data.bits.buffer as SharedArrayBuffer,
      placed: o.placed.bits.buffer as SharedArrayBuffer,
      counters: counters.buffer as SharedArrayBuffer,
      record: record.buffer as SharedArrayBuffer,
      prefetch: prefetch.buffer as SharedArrayBuffer,
      background: o.background,
      bulkBeforeGo: o.bulkBeforeGo ?? false,
    };
    const worker = early ? early.begin(config) : new Worker(WORKER_URL, { workerData: config });
    let ready!: () => void;
    const isReady = new Promise<void>((r) => (ready = r));
    const stopped = new Promise<{ cpuNs: number }>((resolve, reject) => {
      worker.on('message', (m: { ready?: true; stopped?: true; cpuNs?: number }) => {
        if (m.ready) ready();
        if (m.stopped) resolve({ cpuNs: m.cpuNs ?? 0 });
      });
      worker.on('error', (e) => {
        onError(e);
        reject(e);
      });
      worker.on('exit', (code) => reject(new Error(`the page server thread exited (${code}) before stopping`)));
    });
    stopped.catch(() => undefined);
    try {
      await Promise.race([isReady, stopped]);
    } catch (e) {
      await worker.terminate();
      native.close(stopFd);
      throw e;
    }
    return new PageServer(worker, stopFd, counters, record, stopped);
  }

  /** Resolves once the thread has placed its prefetch list (polled: the thread sets a counter); rejects with what `failed()` returns. */
  async prefetchDone(failed: () => Error | undefined): Promise<void> {
    const sleeper = new Int32Array(new SharedArrayBuffer(4));
    for (let spins = 0; this.counters[Counter.PREFETCH_DONE_AT] === 0; spins++) {
      const e = failed();
      if (e) throw e;
      // The event loop now and then: a failure of the thread arrives as a message.
      if (spins % 64 === 63) await new Promise((r) => setImmediate(r));
      else Atomics.wait(sleeper, 0, 0, 0.05);
    }
  }

  /** The guest runs: bulk work may start. */
  go(): void {
    this.counters[Counter.GO] = 1;
  }

  /** Units in the order the guest first faulted on them, so far. */
  recorded(): number[] {
    const n = Atomics.load(this.#record, 0);
    return Array.from(this.#record.subarray(1, 1 + n));
  }

  /** Stops the thread (the guest paused) and returns its CPU time. Safe twice; the eventfd is closed once. */
  stop(): Promise<{ cpuNs: number }> {
    this.#stopping ??= (async () => {
      const one = new Uint8Array(8);
      one[0] = 1;
      native.write(this.#stopFd, one);
      try {
        return await this.#stopped;
      } finally {
        await this.#worker.terminate();
        native.close(this.#stopFd);
      }
    })();
    return this.#stopping;
  }
}
