/**
 * What `postcopy bench` records over time: pages done per vCPU and faults resolved, read
 * from counters that the touchers and the fault readers store into shared memory, sampled
 * by a Recorder on the main thread (which only waits while the run goes on).
 *
 * Where the counts come from: --vcpu-threads touchers publish their own position; KVM
 * vCPUs cannot (the guest program keeps it in a register), so with one userfaultfd per vCPU
 * (the default) a vCPU's pages are its userfaultfd's resolved faults × the guest pages per
 * fault, and with one userfaultfd for all (-a, -o) only the total is recorded.
 */
import type { Recorder } from '../../metrics/series.js';
import { GUEST_PAGE, type BenchOptions, uffdPageSize } from './options.js';
import type { BenchEvent, BenchHooks } from './run.js';

/**
 * Doubles between two counters' slots: 128 bytes, so that no two writers share a cache
 * line (or the adjacent line the prefetcher pairs with it). Touchers store their position
 * on every page; on one line they would bounce it between CPUs on every page.
 */
export const SLOT_STRIDE = 16;

export class BenchRecording {
  /** Touchers' positions (--vcpu-threads). */
  readonly touchers: Float64Array | undefined;
  /** Fault readers' resolved counts, readers of uffd 0 first. */
  readonly readers: Float64Array | undefined;
  readonly #recorder: Recorder;
  readonly #columns: string[] = [];
  readonly #read: () => number[];

  constructor(o: BenchOptions, backend: 'kvm' | 'threads', uffds: number, recorder: Recorder) {
    this.#recorder = recorder;
    const shared = (n: number) => new Float64Array(new SharedArrayBuffer(8 * SLOT_STRIDE * Math.max(1, n)));
    this.touchers = backend === 'threads' ? shared(o.vcpus) : undefined;
    const nReaders = o.mode ? uffds * o.readersPerUffd : 0;
    this.readers = nReaders > 0 ? shared(nReaders) : undefined;
    const readers = this.readers;
    const touchers = this.touchers;
    const r = o.readersPerUffd;
    const perFault = uffdPageSize(o) / GUEST_PAGE;
    const vcpuPages: (() => number)[] = [];
    if (touchers) for (let i = 0; i < o.vcpus; i++) vcpuPages.push(() => touchers[i * SLOT_STRIDE]!);
    else if (readers && uffds === o.vcpus) {
      for (let i = 0; i < o.vcpus; i++) {
        vcpuPages.push(() => {
          let n = 0;
          for (let k = i * r; k < (i + 1) * r; k++) n += readers[k * SLOT_STRIDE]!;
          return Math.min(n * perFault, o.bytesPerVcpu / GUEST_PAGE);
        });
      }
    }
    vcpuPages.forEach((_, i) => this.#columns.push(`pages.vcpu${i}`));
    if (readers) this.#columns.push('faults');
    this.#read = () => {
      const v = vcpuPages.map((f) => f());
      if (readers) {
        let n = 0;
        for (let k = 0; k < nReaders; k++) n += readers[k * SLOT_STRIDE]!;
        v.push(n);
      }
      return v;
    };
  }

  /** The hooks of the run with the recorder's events and start added. */
  hooks(inner: BenchHooks): BenchHooks {
    return {
      ...inner,
      onEvent: (e: BenchEvent) => {
        if (e.phase === 'started') {
          this.#recorder.event('start');
          if (this.#columns.length > 0) this.#recorder.watch(this.#columns, this.#read);
        } else if (e.phase === 'vcpu-done') this.#recorder.event('vcpu-done', { vcpu: e.index });
        else if (e.phase === 'joined') this.#recorder.event('joined');
        inner.onEvent?.(e);
      },
    };
  }
}
