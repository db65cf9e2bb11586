import { Worker } from 'node:worker_threads';
import type { GuestRegion } from '../../memory/guest-memory.js';
import { GUEST_PAGE, type BenchOptions } from './options.js';
import type { BenchHooks } from './run.js';
import type { Placement, VcpuResult } from './result.js';
import { slice, type VcpuRun } from './slices.js';
import type { ToucherConfig } from './toucher.worker.js';

/** Runs the touchers (--vcpu-threads) and returns their results in vCPU order. */
export async function runThreads(o: BenchOptions, region: GuestRegion, place: Placement, hooks: BenchHooks, progress?: { slots: Float64Array; stride: number }): Promise<VcpuRun> {
  const go = new SharedArrayBuffer(4);
  const workers: Worker[] = [];
  const readies: Promise<void>[] = [];
  const results: Promise<VcpuResult>[] = [];
  let done = 0;
  for (let i = 0; i < o.vcpus; i++) {
    const s = slice(o, region, i);
    const config: ToucherConfig = {
      index: i,
      host: s.host,
      gpa: s.gpa,
      bytes: s.bytes,
      stride: GUEST_PAGE,
      seed: o.seed,
      verify: o.verify,
      writePercent: o.writePercent,
      randomAccess: o.randomAccess,
      cpus: place.vcpuCpus[i] ? [...place.vcpuCpus[i]!] : [],
      go,
      ...(progress ? { progress: progress.slots.buffer as SharedArrayBuffer, progressSlot: i * progress.stride } : {}),
    };
    const w = new Worker(new URL('./toucher.worker.js', import.meta.url), { workerData: config });
    workers.push(w);
    let ready!: () => void;
    readies.push(new Promise((r) => (ready = r)));
    results.push(
      new Promise((resolve, reject) => {
        w.on('message', (m: { ready?: boolean; result?: VcpuResult }) => {
          if (m.ready) ready();
          if (m.result) {
            hooks.onEvent?.({ phase: 'vcpu-done', index: i, done: ++done, of: o.vcpus });
            resolve(m.result);
          }
        });
        w.on('error', reject);
        w.on('exit', (code) => reject(new Error(`vCPU thread ${i} exited (${code}) before reporting`)));
      }),
    );
  }
  try {
    await Promise.all(readies);
    hooks.onEvent?.({ phase: 'started' });
    const t0 = process.hrtime.bigint();
    Atomics.store(new Int32Array(go), 0, 1);
    Atomics.notify(new Int32Array(go), 0);
    const vcpus = await Promise.all(results);
    return { totalNs: Number(process.hrtime.bigint() - t0), vcpus };
  } finally {
    await Promise.all(workers.map((w) => w.terminate()));
  }
}

