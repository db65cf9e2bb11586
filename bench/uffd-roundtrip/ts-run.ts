/**
 * One TypeScript run: main() of roundtrip.c, with the handler and the toucher in worker
 * threads of this process. Fresh uffd, region and workers every run.
 */
import { Worker } from 'node:worker_threads';
import { MapFlag } from '../../src/memory/constants.js';
import { Mapping } from '../../src/memory/mapping.js';
import { native } from '../../src/native/binding.js';
import { Userfaultfd } from '../../src/uffd/userfaultfd.js';
import {
  PAGE,
  PATTERN,
  type HandlerData,
  type HandlerDone,
  type HandlerReady,
  type RunResult,
  type RunSpec,
  type ToucherData,
  type ToucherDone,
} from './protocol.js';

const EFD_CLOEXEC = 0o2000000;
const ANONYMOUS_PRIVATE = MapFlag.PRIVATE | MapFlag.ANONYMOUS;
/** An eventfd write: a little-endian u64 1. */
const ONE = new Uint8Array(8);
new DataView(ONE.buffer).setBigUint64(0, 1n, true);

/**
 * A worker whose messages and exit are listened for from its creation: a worker that
 * posts and exits at once has its last message and its 'exit' delivered together, and a
 * listener attached after the message would miss the exit.
 */
class Child {
  readonly worker: Worker;
  /** Resolves with the exit code; rejects with the worker's uncaught error. */
  readonly exited: Promise<number>;
  readonly #queued: unknown[] = [];
  readonly #waiting: ((message: unknown) => void)[] = [];

  constructor(readonly file: string, workerData: unknown) {
    this.worker = new Worker(new URL(file, import.meta.url), { workerData });
    this.worker.on('message', (m: unknown) => {
      const waiter = this.#waiting.shift();
      if (waiter) waiter(m);
      else this.#queued.push(m);
    });
    this.exited = new Promise((resolve, reject) => {
      this.worker.on('error', reject);
      this.worker.on('exit', resolve);
    });
    this.exited.catch(() => {}); // observed through next() and by the caller
  }

  /** The next message; rejects if the worker fails or exits first. */
  next<T>(): Promise<T> {
    if (this.#queued.length > 0) return Promise.resolve(this.#queued.shift() as T);
    const message = new Promise<T>((resolve) => this.#waiting.push(resolve as (m: unknown) => void));
    const early = this.exited.then((code) => {
      throw new Error(`${this.file}: the worker exited (code ${code}) before reporting`);
    });
    return Promise.race([message, early]);
  }
}

export async function runTs(spec: RunSpec): Promise<RunResult> {
  const uffd = Userfaultfd.open({ nonBlocking: spec.wait === 'poll' });
  const region = Mapping.map((spec.pages + 1) * PAGE, { flags: ANONYMOUS_PRIVATE });
  const source = Mapping.map(PAGE, { flags: ANONYMOUS_PRIVATE });
  const stopFd = native.eventfd(0, EFD_CLOEXEC);
  const workers: Child[] = [];
  let finished = false;
  try {
    source.bytes().fill(PATTERN);
    uffd.register(region.address, region.length, ['MISSING']);

    const handlerData: HandlerData = {
      wait: spec.wait,
      cpu: spec.handlerCpu,
      uffd: uffd.fd,
      features: uffd.features,
      ioctls: uffd.ioctls,
      stopFd,
      source: source.address,
      sentinel: region.at(spec.pages * PAGE),
    };
    const handler = new Child('./handler.worker.js', handlerData);
    workers.push(handler);
    // If the handler dies, closing the uffd wakes the toucher's fault (it then gets a
    // zero page), so a failure is reported instead of hanging.
    handler.exited.catch(() => uffd.close());
    await handler.next<HandlerReady>();

    const toucherData: ToucherData = { wait: spec.wait, cpu: spec.toucherCpu, region: region.address, pages: spec.pages };
    const toucher = new Child('./toucher.worker.js', toucherData);
    workers.push(toucher);
    const touched = await toucher.next<ToucherDone>();
    await toucher.exited;

    if (spec.wait === 'poll') native.write(stopFd, ONE);
    const handled = await handler.next<HandlerDone>();
    await handler.exited;

    finished = true;
    return {
      impl: 'ts',
      ...spec,
      ns: touched.ns,
      faultsPerSec: (spec.pages * 1e9) / touched.ns,
      faults: handled.faults,
      eexist: handled.eexist,
      ok: touched.sum === spec.pages * PATTERN && handled.faults === spec.pages,
    };
  } finally {
    if (!finished) {
      // A worker failed. The others may be asleep in the kernel, where terminate() cannot
      // reach them: wake a polling handler, and leave the memory mapped (unmapping under a
      // live worker's view would crash the process); the caller exits.
      native.write(stopFd, ONE);
      for (const w of workers) void w.worker.terminate();
    } else {
      source.unmap();
      region.unmap();
    }
    uffd.close();
    native.close(stopFd);
  }
}
