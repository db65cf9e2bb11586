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

export class PrestartedWorker {
  readonly worker: Worker;
  /** Resolves when the worker has loaded its modules and waits for its configuration. */
  readonly waiting: Promise<void>;
  #begun = false;

  private constructor(url: URL) {
    this.worker = new Worker(url);
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

  /** Starts the worker script at `url` without a configuration. */
  static spawn(url: URL): PrestartedWorker {
    return new PrestartedWorker(url);
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

/** In a worker: its configuration, from workerData or (prestarted) the parent's first message. */
export function workerConfig<T>(): T | Promise<T> {
  if (workerData !== null && workerData !== undefined) return workerData as T;
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
