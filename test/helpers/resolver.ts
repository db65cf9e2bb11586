import { Worker } from 'node:worker_threads';
import { native } from '../../src/native/binding.js';
import type { UffdEvent } from '../../src/uffd/events.js';
import type { Userfaultfd } from '../../src/uffd/userfaultfd.js';

export interface ResolverOptions {
  /** How to resolve missing/minor faults; wp faults are always resolved by un-protecting. */
  resolve: 'copy' | 'zeropage' | 'continue' | 'move';
  /** Start of the registered range (faults are resolved relative to it). */
  start: number;
  pageSize: number;
  /** copy/move: address of the bytes for `start`; page p comes from source + (p - start). */
  source?: number;
  /** Resolve with DONTWAKE, then UFFDIO_WAKE. */
  wakeSeparately?: boolean;
  /** copy: map the page write-protected (UFFDIO_COPY_MODE_WP). */
  copyWriteProtected?: boolean;
}

export interface ResolverReport {
  faults: number;
  missing: number;
  minor: number;
  wp: number;
  writes: number;
  /** Resolutions that found the page already there (EEXIST). */
  exists: number;
  /** Partial fills retried after EAGAIN. */
  retries: number;
  /** Faulting addresses in order (the first 65536). */
  pages: number[];
  threadIds: number[];
}

/** A worker thread resolving the faults of `uffd`; stop() ends it and returns what it saw. */
export class Resolver {
  readonly events: UffdEvent[] = [];
  readonly #worker: Worker;
  readonly #stopFd: number;
  readonly #done: Promise<ResolverReport>;
  /** Settles when the worker is waiting for faults. Touch registered memory only after it. */
  readonly ready: Promise<void>;
  #waiters: (() => void)[] = [];

  /** Starts a resolver and waits until it is ready. */
  static async start(uffd: Userfaultfd, options: ResolverOptions): Promise<Resolver> {
    const r = new Resolver(uffd, options);
    await Promise.race([r.ready, r.#done]);
    return r;
  }

  private constructor(uffd: Userfaultfd, options: ResolverOptions) {
    // The kernel answers poll() on a blocking userfaultfd with POLLERR: readers that wait
    // in poll/epoll need O_NONBLOCK.
    if (!uffd.nonBlocking) throw new Error('Resolver needs a userfaultfd opened with nonBlocking: true');
    this.#stopFd = native.eventfd(0, 0o2000000 /* EFD_CLOEXEC */);
    this.#worker = new Worker(new URL('./resolver.worker.js', import.meta.url), {
      workerData: { ...options, fd: uffd.fd, features: uffd.features, ioctls: uffd.ioctls, stopFd: this.#stopFd },
    });
    let ready!: () => void;
    this.ready = new Promise((r) => (ready = r));
    this.#done = new Promise((resolve, reject) => {
      this.#worker.on('message', (m: { ready?: boolean; event?: UffdEvent; report?: ResolverReport }) => {
        if (m.ready) ready();
        if (m.event) {
          this.events.push(m.event);
          for (const w of this.#waiters.splice(0)) w();
        }
        if (m.report) resolve(m.report);
      });
      this.#worker.on('error', reject);
      this.#worker.on('exit', (code) => reject(new Error(`resolver worker exited with ${code} before reporting`)));
    });
  }

  /** Resolves once `count` non-fault events have arrived. */
  async waitForEvents(count: number, timeoutMs = 5000): Promise<UffdEvent[]> {
    const deadline = Date.now() + timeoutMs;
    while (this.events.length < count) {
      if (Date.now() > deadline) throw new Error(`expected ${count} events, got ${JSON.stringify(this.events)}`);
      await new Promise<void>((r) => {
        this.#waiters.push(r);
        setTimeout(r, 50);
      });
    }
    return this.events;
  }

  async stop(): Promise<ResolverReport> {
    const one = new Uint8Array(8);
    one[0] = 1;
    native.write(this.#stopFd, one);
    try {
      return await this.#done;
    } finally {
      await this.#worker.terminate();
      native.close(this.#stopFd);
    }
  }
}
