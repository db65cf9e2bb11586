/**
 * Helpers of the dirty-tracking tests: writer threads (page-writer.worker.ts) that write
 * pages while the main thread collects, and reading a collection as page numbers.
 */
import { Worker } from 'node:worker_threads';

export interface PageWriterConfig {
  address: number;
  bytes: number;
  /** Pages (4 KiB) this writer writes: [from, to). */
  from: number;
  to: number;
  seed: number;
  /** Int32Array [collections completed, go, stop]. */
  control: SharedArrayBuffer;
  /** Int32Array per page: collections completed before its last write, -1 if never written. */
  lastWrite: SharedArrayBuffer;
}

export const COMPLETED = 0;
export const GO = 1;
export const STOP = 2;

/** Writer threads over [address, address+bytes), each on its own slice of the first `pages` pages. */
export class Writers {
  readonly control = new Int32Array(new SharedArrayBuffer(12));
  readonly lastWrite: Int32Array;
  readonly #done: Promise<number>[] = [];
  readonly #exited: Promise<unknown>[] = [];

  private constructor(pages: number) {
    this.lastWrite = new Int32Array(new SharedArrayBuffer(pages * 4)).fill(-1);
  }

  /** Starts `threads` writers over the first `pages` pages and waits until each is ready. */
  static async start(address: number, bytes: number, pages: number, threads: number): Promise<Writers> {
    const w = new Writers(bytes / 4096);
    const ready: Promise<void>[] = [];
    for (let i = 0; i < threads; i++) {
      const config: PageWriterConfig = {
        address,
        bytes,
        from: Math.floor((pages * i) / threads),
        to: Math.floor((pages * (i + 1)) / threads),
        seed: 0x9e3779b9 * (i + 1),
        control: w.control.buffer as SharedArrayBuffer,
        lastWrite: w.lastWrite.buffer as SharedArrayBuffer,
      };
      const worker = new Worker(new URL('./page-writer.worker.js', import.meta.url), { workerData: config });
      w.#exited.push(new Promise((r) => worker.once('exit', r)));
      ready.push(new Promise((resolve, reject) => {
        worker.once('message', () => resolve());
        worker.once('error', reject);
      }));
      w.#done.push(new Promise((resolve, reject) => {
        worker.on('message', (m: { writes?: number }) => m.writes !== undefined && resolve(m.writes));
        worker.once('error', reject);
        worker.once('exit', (code) => code !== 0 && reject(new Error(`writer ${i} exited with ${code}`)));
      }));
    }
    await Promise.all(ready);
    return w;
  }

  go(): void {
    Atomics.store(this.control, GO, 1);
    Atomics.notify(this.control, GO);
  }

  /** Marks collection `k` (1-based) as completed: writes after this must be reported later. */
  completed(k: number): void {
    Atomics.store(this.control, COMPLETED, k);
  }

  /** Stops the writers; resolves to the number of writes they made. */
  async stop(): Promise<number> {
    Atomics.store(this.control, STOP, 1);
    const counts = await Promise.all(this.#done);
    await Promise.all(this.#exited);
    return counts.reduce((a, b) => a + b, 0);
  }
}

/** The page numbers whose bits are set in a collection of `pages` pages. */
export function reportedPages(words: BigUint64Array, pages: number): number[] {
  const halves = new Uint32Array(words.buffer, words.byteOffset, words.length * 2);
  const out: number[] = [];
  for (let h = 0; h < halves.length; h++) {
    let v = halves[h]!;
    while (v !== 0) {
      const bit = 31 - Math.clz32(v & -v);
      const p = h * 32 + bit;
      if (p < pages) out.push(p);
      v = (v & (v - 1)) >>> 0;
    }
  }
  return out;
}

/** Sleeps the calling thread (the main thread's collect loop paces itself with this). */
export function sleepMs(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}
