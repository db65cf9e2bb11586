/**
 * Starts and stops the destination's post-copy fault reader (fault-reader.worker.ts) and
 * hands its forwarded faults to a callback on the main thread.
 */
import { Worker } from 'node:worker_threads';
import { native } from '../../native/binding.js';
import type { Userfaultfd } from '../../uffd/userfaultfd.js';
import type { MigrationMode } from './protocol.js';
import type { PageStates } from './page-state.js';

export interface FaultReaderConfig {
  fd: number;
  features: bigint;
  ioctls: bigint;
  stopFd: number;
  mode: MigrationMode;
  /** Host address of the registered memory's first byte, and the unit faults are resolved in. */
  regionStart: number;
  pageSize: number;
  states: SharedArrayBuffer;
}

/** A fault on a STALE page: which page, which thread, when the reader read it (epoch ms). */
export interface FaultMessage {
  page: number;
  tid: number;
  at: number;
}

export interface FaultReaderStats {
  faults: number;
  /** Resolved by the reader at once (the page was PRESENT). */
  local: number;
  /** Sent to the main thread to fetch. */
  forwarded: number;
  /** Local resolutions that found the page already mapped. */
  exists: number;
  cpuNs: number;
}

export class FaultReader {
  readonly #worker: Worker;
  readonly #stopFd: number;
  readonly #stats: Promise<FaultReaderStats>;
  #stopped = false;
  #closing: Promise<unknown> = Promise.resolve();

  private constructor(worker: Worker, stopFd: number, stats: Promise<FaultReaderStats>) {
    this.#worker = worker;
    this.#stopFd = stopFd;
    this.#stats = stats;
  }

  /** Starts the reader; resolves when it waits for faults. Faults on STALE pages go to `onFault`. */
  static async start(
    uffd: Userfaultfd,
    options: { mode: MigrationMode; regionStart: number; pageSize: number; states: PageStates },
    onFault: (m: FaultMessage) => void,
    onError: (e: Error) => void,
  ): Promise<FaultReader> {
    const stopFd = native.eventfd(0, 0o2000000 /* EFD_CLOEXEC */);
    const config: FaultReaderConfig = {
      fd: uffd.fd,
      features: uffd.features,
      ioctls: uffd.ioctls,
      stopFd,
      mode: options.mode,
      regionStart: options.regionStart,
      pageSize: options.pageSize,
      states: options.states.buffer,
    };
    const worker = new Worker(new URL('./fault-reader.worker.js', import.meta.url), { workerData: config });
    let ready!: () => void;
    const isReady = new Promise<void>((r) => (ready = r));
    const stats = new Promise<FaultReaderStats>((resolve, reject) => {
      worker.on('message', (m: FaultMessage | { ready: true } | { stats: FaultReaderStats }) => {
        if ('ready' in m) ready();
        else if ('stats' in m) resolve(m.stats);
        else onFault(m);
      });
      worker.on('error', (e) => {
        onError(e);
        reject(e);
      });
      worker.on('exit', (code) => reject(new Error(`fault reader exited (${code}) before reporting`)));
    });
    stats.catch(() => undefined);
    await Promise.race([isReady, stats]);
    return new FaultReader(worker, stopFd, stats);
  }

  /** Stops the reader (after the workers are paused) and returns what it did. Safe twice: the stop eventfd is closed once. */
  async stop(): Promise<FaultReaderStats> {
    if (!this.#stopped) {
      this.#stopped = true;
      const one = new Uint8Array(8);
      one[0] = 1;
      native.write(this.#stopFd, one);
      this.#closing = this.#stats.finally(async () => {
        await this.#worker.terminate();
        // Once: by the time of a second stop() this number may belong to another descriptor.
        native.close(this.#stopFd);
      });
      this.#closing.catch(() => undefined);
    }
    await this.#closing;
    return this.#stats;
  }

}
