import { Worker } from 'node:worker_threads';
import { ClosedError, InvalidArgumentError } from '../errors.js';
import { Histogram } from '../metrics/histogram.js';
import { native } from '../native/binding.js';
import type { Userfaultfd } from '../uffd/userfaultfd.js';
import type { ReaderConfig } from './reader.worker.js';
import type { ReaderStats, Resolution } from './resolution.js';

export interface PagerOptions {
  /** The userfaultfds to serve; each must be non-blocking (readers wait in epoll). */
  readonly uffds: readonly Userfaultfd[];
  /** Reader threads per userfaultfd (demand_paging_test -r). */
  readonly readersPerUffd: number;
  readonly resolution: Resolution;
  /** The unit faults are resolved in: the backing's page size. */
  readonly pageSize: number;
  /** Delay before resolving each fault, µs (demand_paging_test -d). */
  readonly delayUs?: number;
  /** Poll for the next fault this long before sleeping, µs (see ReaderConfig.spinUs). Default 0. */
  readonly spinUs?: number;
  /** CPUs for reader i (cycled); undefined: no pinning. */
  readonly readerCpus?: readonly (readonly number[])[];
}

export interface PagerStats {
  readonly readers: readonly ReaderStats[];
  readonly faults: number;
  readonly missing: number;
  readonly minor: number;
  readonly wp: number;
  readonly exists: number;
  readonly retries: number;
  readonly cpuNs: number;
  readonly service: Histogram;
}

/**
 * Fault readers for a set of userfaultfds: worker threads blocking in epoll, resolving
 * faults as told. Knows nothing of KVM or of the network: what to do with a fault is the
 * Resolution.
 */
export class Pager {
  readonly #workers: Worker[] = [];
  readonly #reports: Promise<ReaderStats>[] = [];
  readonly #stopFd: number;
  #stopped = false;

  private constructor(stopFd: number) {
    this.#stopFd = stopFd;
  }

  /** Starts the readers and resolves once every one of them is waiting for faults. */
  static async start(options: PagerOptions): Promise<Pager> {
    if (!Number.isInteger(options.readersPerUffd) || options.readersPerUffd < 1) {
      throw new InvalidArgumentError(`readers per userfaultfd must be a positive integer, got ${options.readersPerUffd}`);
    }
    for (const u of options.uffds) {
      if (!u.nonBlocking) throw new InvalidArgumentError(`userfaultfd ${u.fd} is blocking; fault readers wait in epoll and need nonBlocking: true`);
    }
    // One eventfd stops every reader: it stays readable once written (no EFD_SEMAPHORE).
    const pager = new Pager(native.eventfd(0, 0o2000000 /* EFD_CLOEXEC */));
    const readies: Promise<void>[] = [];
    let index = 0;
    for (const u of options.uffds) {
      for (let k = 0; k < options.readersPerUffd; k++, index++) {
        const cpus = options.readerCpus?.length ? [...options.readerCpus[index % options.readerCpus.length]!] : [];
        const config: ReaderConfig = {
          fd: u.fd,
          features: u.features,
          ioctls: u.ioctls,
          stopFd: pager.#stopFd,
          resolution: options.resolution,
          pageSize: options.pageSize,
          delayUs: options.delayUs ?? 0,
          cpus,
          exclusive: options.readersPerUffd > 1,
          spinUs: options.spinUs ?? 0,
        };
        const worker = new Worker(new URL('./reader.worker.js', import.meta.url), { workerData: config });
        pager.#workers.push(worker);
        let ready!: () => void;
        readies.push(new Promise((r) => (ready = r)));
        pager.#reports.push(
          new Promise((resolve, reject) => {
            worker.on('message', (m: { ready?: boolean; stats?: ReaderStats }) => {
              if (m.ready) ready();
              if (m.stats) resolve(m.stats);
            });
            worker.on('error', reject);
            worker.on('exit', (code) => reject(new Error(`fault reader exited (${code}) before reporting`)));
          }),
        );
      }
    }
    try {
      await Promise.race([Promise.all(readies), Promise.all(pager.#reports)]);
    } catch (e) {
      await pager.#terminate();
      throw e;
    }
    return pager;
  }

  async #terminate(): Promise<void> {
    await Promise.all(this.#workers.map((w) => w.terminate()));
    native.close(this.#stopFd);
  }

  /** Stops every reader and returns what they did. Call after the faulting threads are done. */
  async stop(): Promise<PagerStats> {
    if (this.#stopped) throw new ClosedError('pager', 'stop');
    this.#stopped = true;
    const one = new Uint8Array(8);
    one[0] = 1;
    native.write(this.#stopFd, one);
    try {
      const readers = await Promise.all(this.#reports);
      const service = new Histogram();
      for (const r of readers) service.merge(r.service);
      const sum = (k: 'faults' | 'missing' | 'minor' | 'wp' | 'exists' | 'retries' | 'cpuNs') => readers.reduce((n, r) => n + r[k], 0);
      return {
        readers,
        faults: sum('faults'),
        missing: sum('missing'),
        minor: sum('minor'),
        wp: sum('wp'),
        exists: sum('exists'),
        retries: sum('retries'),
        cpuNs: sum('cpuNs'),
        service,
      };
    } finally {
      await this.#terminate();
    }
  }
}
