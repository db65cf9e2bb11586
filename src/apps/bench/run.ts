import { Worker } from 'node:worker_threads';
import { gpa } from '../../address.js';
import { UnsupportedError } from '../../errors.js';
import { Backing } from '../../memory/backing.js';
import { GuestMemory, type GuestRegion } from '../../memory/guest-memory.js';
import { isSystemError } from '../../native/errors.js';
import { Pager, type PagerStats } from '../../pager/pager.js';
import type { Resolution } from '../../pager/resolution.js';
import type { FeatureName } from '../../uffd/constants.js';
import { Userfaultfd } from '../../uffd/userfaultfd.js';
import { GUEST_PAGE, TEST_MEMORY_GPA, type BenchOptions, testMemoryBytes, uffdPageSize } from './options.js';
import { writePatterns } from './pattern.js';
import type { BenchResult, Placement, VcpuResult } from './result.js';
import type { ToucherConfig } from './toucher.worker.js';

/** Progress events, for a display on a terminal. */
export type BenchEvent =
  | { readonly phase: 'prefill'; readonly bytes: number }
  | { readonly phase: 'ready'; readonly testMemory: { readonly start: number; readonly end: number } }
  | { readonly phase: 'started' }
  | { readonly phase: 'vcpu-done'; readonly index: number; readonly done: number; readonly of: number }
  | { readonly phase: 'joined' };

export interface BenchHooks {
  readonly onEvent?: (e: BenchEvent) => void;
}

/** The userfaultfd features a registration mode needs on a backing source. */
function featuresFor(o: BenchOptions): FeatureName[] {
  const hugetlb = o.source.includes('hugetlb');
  const shared = o.source === 'shmem' || o.source === 'guest_memfd';
  if (o.mode === 'MINOR') return [hugetlb ? 'MINOR_HUGETLBFS' : 'MINOR_SHMEM'];
  if (hugetlb) return ['MISSING_HUGETLBFS'];
  return shared ? ['MISSING_SHMEM'] : [];
}

/** The slice of guest memory vCPU i pages: its own, or everybody's with -o. */
function slice(o: BenchOptions, region: GuestRegion, i: number): { host: number; gpa: number; bytes: number } {
  const offset = o.overlap ? 0 : i * o.bytesPerVcpu;
  return { host: region.host + offset, gpa: region.guestAddress + offset, bytes: o.bytesPerVcpu };
}

function placement(o: BenchOptions): Placement {
  if (o.vcpuCpus) {
    return {
      vcpuCpus: Array.from({ length: o.vcpus }, (_, i) => [o.vcpuCpus![i % o.vcpuCpus!.length]!]),
      readerCpus: o.readerCpus ? [[...o.readerCpus]] : [],
      reason: 'pinned with -c',
    };
  }
  return { vcpuCpus: [], readerCpus: [], reason: 'not pinned: the scheduler places vCPUs and readers' };
}

/**
 * Opens the userfaultfds and registers the test memory: one for all (-a, -o), or one per
 * vCPU slice, as demand_paging_test does.
 */
function registerUffds(o: BenchOptions, region: GuestRegion): Userfaultfd[] {
  const ranges = o.singleUffd || o.overlap
    ? [{ host: region.host, bytes: region.size }]
    : Array.from({ length: o.vcpus }, (_, i) => slice(o, region, i));
  const uffds: Userfaultfd[] = [];
  try {
    for (const r of ranges) {
      const u = Userfaultfd.open({ features: featuresFor(o), nonBlocking: true });
      uffds.push(u);
      try {
        u.register(region.backing.primary.at(r.host - region.host), r.bytes, [o.mode!]);
      } catch (e) {
        if (o.source === 'guest_memfd' && isSystemError(e, 'EINVAL')) {
          throw new UnsupportedError(
            `userfaultfd on guest_memfd: this kernel refuses the registration (${(e as Error).message}); the guest_memfd minor-fault series (seed 004) is not merged`,
            'Use -s shmem or -s shared_hugetlb, or run guest_memfd without -u',
          );
        }
        throw e;
      }
    }
    return uffds;
  } catch (e) {
    for (const u of uffds) u.close();
    throw e;
  }
}

/** Runs the touchers (--vcpu-threads) and returns their results in vCPU order. */
async function runThreads(o: BenchOptions, region: GuestRegion, place: Placement, hooks: BenchHooks): Promise<{ totalNs: number; vcpus: VcpuResult[] }> {
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

/** One run of the demand paging benchmark. */
export async function runBench(o: BenchOptions, hooks: BenchHooks = {}): Promise<BenchResult> {
  const size = testMemoryBytes(o);
  const memory = GuestMemory.create([{ guestAddress: gpa(TEST_MEMORY_GPA), size, source: o.source }]);
  let source: Backing | undefined;
  const uffds: Userfaultfd[] = [];
  let pager: Pager | undefined;
  let stats: PagerStats | undefined;
  try {
    const region = memory.regions[0]!;
    hooks.onEvent?.({ phase: 'prefill', bytes: size });
    // Every page's pattern is put where the fault resolution will find it: the COPY source
    // for MISSING, the alias for MINOR (the pages then exist in the page cache, unmapped in
    // the guest's view). Without userfaultfd, shared memory is prefilled the same way (the
    // kernel then maps page-cache pages on its own); private memory is left empty.
    let resolution: Resolution | undefined;
    if (o.mode === 'MISSING') {
      source = Backing.create('anonymous', size);
      writePatterns(source.primary.bytes(), region.guestAddress, o.seed, GUEST_PAGE);
      resolution = { kind: 'copy', regionStart: region.host, source: source.primary.address };
    } else if (region.alias !== undefined) {
      writePatterns(region.backing.alias!.bytes(), region.guestAddress, o.seed, GUEST_PAGE);
      if (o.mode === 'MINOR') resolution = { kind: 'continue' };
    }
    const place = placement(o);
    if (o.mode) {
      uffds.push(...registerUffds(o, region));
      pager = await Pager.start({
        uffds,
        readersPerUffd: o.readersPerUffd,
        resolution: resolution!,
        pageSize: uffdPageSize(o),
        delayUs: o.delayUs,
        readerCpus: place.readerCpus,
      });
    }
    hooks.onEvent?.({ phase: 'ready', testMemory: { start: region.guestAddress, end: region.end } });
    const verify = o.verify && (o.mode !== undefined || region.alias !== undefined);
    const run = await runThreads({ ...o, verify }, region, place, hooks);
    hooks.onEvent?.({ phase: 'joined' });
    if (pager) {
      stats = await pager.stop();
      pager = undefined;
    }
    const touchedBytes = o.randomAccess ? NaN : size;
    return {
      options: { ...o, verify },
      backend: 'threads',
      testMemory: { start: region.guestAddress, end: region.end },
      totalNs: run.totalNs,
      vcpus: run.vcpus,
      pager: stats,
      expectedFaults: o.mode ? touchedBytes / uffdPageSize(o) : 0,
      placement: place,
    };
  } finally {
    if (pager) await pager.stop().catch(() => undefined);
    for (const u of uffds) u.close();
    source?.close();
    memory.close();
  }
}
