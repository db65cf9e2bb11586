import { Worker } from 'node:worker_threads';
import { ArgumentError, ClosedError, InvalidArgumentError } from '../errors.js';
import { Histogram } from '../metrics/histogram.js';
import { describe, integer, nonNegative, oneOf, options as optionsArg } from '../native/args.js';
import { native } from '../native/binding.js';
import { Userfaultfd } from '../uffd/userfaultfd.js';
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
  /**
   * A Float64Array over shared memory with a slot per reader (readers of uffds[0] first,
   * reader i at index i × progressStride): each reader stores its count of resolved faults
   * there after every fault, for a sampler to read while the pager runs. Undefined:
   * nothing is published.
   */
  readonly progress?: Float64Array;
  /** Elements between two readers' slots (default 1); 16 keeps each reader on its own cache lines. */
  readonly progressStride?: number;
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
  #stopping: Promise<PagerStats> | undefined;
  #fdClosed = false;

  private constructor(stopFd: number) {
    this.#stopFd = stopFd;
  }

  /** Starts the readers and resolves once every one of them is waiting for faults. */
  static async start(options: PagerOptions): Promise<Pager> {
    checkOptions(options);
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
          ...(options.progress ? { progress: options.progress.buffer as SharedArrayBuffer, progressSlot: options.progress.byteOffset / 8 + index * (options.progressStride ?? 1) } : {}),
        };
        const worker = new Worker(new URL('./reader.worker.js', import.meta.url), { workerData: config });
        pager.#workers.push(worker);
        let ready!: () => void;
        readies.push(new Promise((r) => (ready = r)));
        const report = new Promise<ReaderStats>((resolve, reject) => {
          worker.on('message', (m: { ready?: boolean; stats?: ReaderStats }) => {
            if (m.ready) ready();
            if (m.stats) resolve(m.stats);
          });
          worker.on('error', reject);
          worker.on('exit', (code) => reject(new Error(`fault reader exited (${code}) before reporting`)));
        });
        report.catch(() => undefined); // seen by stop() or start(); never an unhandled rejection
        pager.#reports.push(report);
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

  /** Ends the workers and closes the stop eventfd, once (its number may be reused after). */
  async #terminate(): Promise<void> {
    await Promise.all(this.#workers.map((w) => w.terminate()));
    if (this.#fdClosed) return;
    this.#fdClosed = true;
    native.close(this.#stopFd);
  }

  /**
   * Stops every reader and returns what they did. Call after the faulting threads are done.
   * Safe twice: a second call returns the same result (the stop eventfd is closed once).
   */
  stop(): Promise<PagerStats> {
    this.#stopping ??= this.#stop();
    return this.#stopping;
  }

  async #stop(): Promise<PagerStats> {
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

const PAGE = 4096;

/** Every option of Pager.start, checked before a thread starts. */
function checkOptions(options: PagerOptions): void {
  const where = 'Pager.start';
  const o = optionsArg<PagerOptions>(where, 'options', options);
  if (!Array.isArray(o.uffds) || o.uffds.length === 0) {
    throw new ArgumentError('options.uffds', `${where}: options.uffds must be a non-empty array of Userfaultfd, got ${describe(o.uffds)}`);
  }
  o.uffds.forEach((u: unknown, i) => {
    if (!(u instanceof Userfaultfd)) throw new ArgumentError(`options.uffds[${i}]`, `${where}: options.uffds[${i}] must be a Userfaultfd, got ${describe(u)}`);
    if (u.closed) throw new ClosedError(`userfaultfd ${u.fd}`, where);
    if (!u.nonBlocking) throw new InvalidArgumentError(`userfaultfd ${u.fd} is blocking; fault readers wait in epoll and need nonBlocking: true`);
  });
  if (!Number.isInteger(o.readersPerUffd) || (o.readersPerUffd as number) < 1) {
    throw new InvalidArgumentError(`readers per userfaultfd must be a positive integer, got ${String(o.readersPerUffd)}`);
  }
  const pageSize = integer(where, 'options.pageSize', o.pageSize, { min: PAGE, max: 2 ** 30 });
  if ((pageSize & (pageSize - 1)) !== 0) {
    throw new ArgumentError('options.pageSize', `${where}: options.pageSize must be a power of two (the backing's page size: 4096, 2 MiB, 1 GiB), got ${pageSize}`);
  }
  const r = optionsArg<Resolution>(where, 'options.resolution', o.resolution);
  const kind = oneOf(where, 'options.resolution.kind', r.kind, ['copy', 'continue', 'zeropage'] as const);
  if (kind === 'copy') {
    const c = r as Partial<Extract<Resolution, { kind: 'copy' }>>;
    integer(where, 'options.resolution.regionStart', c.regionStart, { min: 0, multipleOf: PAGE, unit: `the page size (${PAGE})` });
    integer(where, 'options.resolution.source', c.source, { min: 0, multipleOf: PAGE, unit: `the page size (${PAGE})` });
  }
  if (o.delayUs !== undefined) nonNegative(where, 'options.delayUs', o.delayUs);
  if (o.progress !== undefined) {
    const readers = (o.uffds as readonly unknown[]).length * (o.readersPerUffd as number);
    const stride = o.progressStride === undefined ? 1 : integer(where, 'options.progressStride', o.progressStride, { min: 1, max: 1024 });
    if (!(o.progress instanceof Float64Array) || !(o.progress.buffer instanceof SharedArrayBuffer) || o.progress.length < (readers - 1) * stride + 1) {
      throw new ArgumentError('options.progress', `${where}: options.progress must be a Float64Array over a SharedArrayBuffer with a slot for each of the ${readers} reader(s), got ${describe(o.progress)}`);
    }
  }
  if (o.spinUs !== undefined) nonNegative(where, 'options.spinUs', o.spinUs);
  if (o.readerCpus !== undefined) {
    if (!Array.isArray(o.readerCpus)) throw new ArgumentError('options.readerCpus', `${where}: options.readerCpus must be an array of CPU lists, got ${describe(o.readerCpus)}`);
    o.readerCpus.forEach((cpus: unknown, i) => {
      if (!Array.isArray(cpus)) throw new ArgumentError(`options.readerCpus[${i}]`, `${where}: options.readerCpus[${i}] must be an array of CPU numbers, got ${describe(cpus)}`);
      cpus.forEach((cpu: unknown, j) => integer(where, `options.readerCpus[${i}][${j}]`, cpu, { min: 0, max: 1023 }));
    });
  }
}
