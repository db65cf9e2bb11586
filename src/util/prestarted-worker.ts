/**
 * Worker threads started before they know their work. Starting a Node worker (an isolate,
 * its modules, the addon) costs tens of milliseconds of CPU; a restore that starts its
 * threads after opening the snapshot spends most of its time to resume there. A restorer
 * process starts them first, as a VMM process exists before its snapshot load request, and
 * hands each its configuration (its workerData) by one message when the work is known.
 *
 * The worker's side is `workerConfig()`: workerData when it was given at spawn, else the
 * first message, after telling the parent it is loaded and waiting.
 */
import { parentPort, Worker, workerData } from 'node:worker_threads';

type Hello = { readonly prestarted: 'waiting' };
/** workerData of a prestarted worker: marks it as one, with what it may prepare before its work is known. */
const EARLY = 'postcopy.prestarted';

export class PrestartedWorker {
  readonly worker: Worker;
  /** Resolves when the worker has loaded its modules and waits for its configuration. */
  readonly waiting: Promise<void>;
  #begun = false;

  private constructor(url: URL, early: unknown) {
    this.worker = new Worker(url, { workerData: { [EARLY]: early ?? null } });
    this.waiting = new Promise<void>((resolve, reject) => {
      const onMessage = (m: Hello) => {
        if (m?.prestarted !== 'waiting') return;
        this.worker.off('message', onMessage);
        this.worker.off('error', reject);
        resolve();
      };
      this.worker.on('message', onMessage);
      this.worker.once('error', reject);
    });
    this.waiting.catch(() => undefined);
  }

  /** Starts the worker script at `url` without a configuration; `early` is what it may prepare meanwhile (prestartData()). */
  static spawn(url: URL, early?: unknown): PrestartedWorker {
    return new PrestartedWorker(url, early);
  }

  /** Hands the worker its configuration (once); from here it runs as if spawned with it. */
  begin(config: unknown): Worker {
    if (this.#begun) throw new Error('a prestarted worker is begun once');
    this.#begun = true;
    this.worker.postMessage({ prestarted: 'config', config });
    return this.worker;
  }

  /** Ends a worker that was never begun. */
  async discard(): Promise<void> {
    if (this.#begun) return;
    this.#begun = true;
    this.worker.unref();
    await this.worker.terminate();
  }
}

const prestarted = (): boolean => typeof workerData === 'object' && workerData !== null && EARLY in workerData;

/** In a prestarted worker: what it was given to prepare before its work is known (undefined otherwise). */
export function prestartData<T>(): T | undefined {
  return prestarted() ? ((workerData as Record<string, unknown>)[EARLY] as T | null) ?? undefined : undefined;
}

/** In a worker: its configuration, from workerData or (prestarted) the parent's first message. */
export function workerConfig<T>(): T | Promise<T> {
  if (!prestarted()) return workerData as T;
  const port = parentPort!;
  return new Promise<T>((resolve) => {
    const onMessage = (m: { prestarted?: string; config?: T }) => {
      if (m?.prestarted !== 'config') return;
      port.off('message', onMessage);
      resolve(m.config as T);
    };
    port.on('message', onMessage);
    port.postMessage({ prestarted: 'waiting' } satisfies Hello);
  });
}
