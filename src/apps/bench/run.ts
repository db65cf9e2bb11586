import { gpa } from '../../address.js';
import { PostcopyError, UnsupportedError } from '../../errors.js';
import { Backing } from '../../memory/backing.js';
import { GuestMemory, type GuestRegion } from '../../memory/guest-memory.js';
import { isSystemError } from '../../native/errors.js';
import { Pager, type PagerStats } from '../../pager/pager.js';
import type { Resolution } from '../../pager/resolution.js';
import type { FeatureName } from '../../uffd/constants.js';
import { Userfaultfd } from '../../uffd/userfaultfd.js';
import { GUEST_PAGE, TEST_MEMORY_GPA, type BenchOptions, testMemoryBytes, uffdPageSize } from './options.js';
import { fillPattern } from '../../kvm/guest/bench-program.js';
import { Kvm } from '../../kvm/system.js';
import type { Vm } from '../../kvm/vm.js';
import { seed64 } from './pattern.js';
import { slice } from './slices.js';
import { runKvm } from './vcpus-kvm.js';
import { runThreads } from './vcpus-threads.js';
import { choosePlacement } from './placement.js';
import type { BenchResult, Placement } from './result.js';
import { calibratePlacement } from './calibrate.js';
import type { Recorder } from '../../metrics/series.js';
import { BenchRecording, SLOT_STRIDE } from './recording.js';

/** Progress events, for a display on a terminal. */
export type BenchEvent =
  | { readonly phase: 'prefill'; readonly bytes: number }
  | { readonly phase: 'calibrate' }
  | { readonly phase: 'ready'; readonly testMemory: { readonly start: number; readonly end: number } }
  | { readonly phase: 'started' }
  | { readonly phase: 'vcpu-done'; readonly index: number; readonly done: number; readonly of: number }
  | { readonly phase: 'joined' };

export interface BenchHooks {
  readonly onEvent?: (e: BenchEvent) => void;
  /** Records pages done per vCPU and faults resolved over time (recording.ts); the result's series. */
  readonly recorder?: Recorder;
}

/** The userfaultfd features a registration mode needs on a backing source. */
function featuresFor(o: BenchOptions): FeatureName[] {
  const hugetlb = o.source.includes('hugetlb');
  const shared = o.source === 'shmem' || o.source === 'guest_memfd';
  if (o.mode === 'MINOR') return [hugetlb ? 'MINOR_HUGETLBFS' : 'MINOR_SHMEM'];
  if (hugetlb) return ['MISSING_HUGETLBFS'];
  return shared ? ['MISSING_SHMEM'] : [];
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

/** /dev/kvm, or why not and what to do, including running without KVM. */
export function openKvm(): Kvm {
  try {
    return Kvm.open();
  } catch (e) {
    if (e instanceof PostcopyError && e.remedy) {
      throw new UnsupportedError(e.detail, `${e.remedy}; or run the same experiment on plain threads with --vcpu-threads`);
    }
    throw e;
  }
}

/**
 * --vcpu-threads with guest_memfd: there is no guest to run, but a guest_memfd still needs
 * a VM to be made by; without /dev/kvm there is none.
 */
function standaloneGuestMemfd(o: BenchOptions): ((size: number) => number) | undefined {
  if (o.source !== 'guest_memfd') return undefined;
  const kvm = Kvm.open();
  const vm = kvm.createVm();
  return (size) => {
    try {
      return vm.createGuestMemfd(size);
    } finally {
      vm.close();
      kvm.close();
    }
  };
}

/** One run of the demand paging benchmark. */
export async function runBench(o: BenchOptions, outerHooks: BenchHooks = {}, placement?: Placement): Promise<BenchResult> {
  let hooks = outerHooks;
  const size = testMemoryBytes(o);
  // A guest_memfd belongs to the VM it was made by, so with KVM the VM comes first.
  const kvm = o.vcpuThreads ? undefined : openKvm();
  let vm: Vm | undefined;
  let memory: GuestMemory;
  try {
    if (kvm && o.source === 'guest_memfd') vm = kvm.createVm();
    const createGuestMemfd = vm?.guestMemfdFactory() ?? standaloneGuestMemfd(o);
    memory = GuestMemory.create([{ guestAddress: gpa(TEST_MEMORY_GPA), size, source: o.source }], createGuestMemfd ? { createGuestMemfd } : {});
  } catch (e) {
    vm?.close();
    kvm?.close();
    throw e;
  }
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
      fillPattern(source.primary.bytes(), region.guestAddress, seed64(o.seed), GUEST_PAGE);
      resolution = { kind: 'copy', regionStart: region.host, source: source.primary.address };
    } else if (region.alias !== undefined) {
      fillPattern(region.backing.alias!.bytes(), region.guestAddress, seed64(o.seed), GUEST_PAGE);
      if (o.mode === 'MINOR') resolution = { kind: 'continue' };
    }
    if (o.mode) uffds.push(...registerUffds(o, region));
    // Unpinned and left to us: measure which placement pays on this machine.
    const calibrate = placement === undefined && o.mode !== undefined && o.vcpuCpus === undefined && o.readerWait === 'auto';
    if (calibrate) hooks.onEvent?.({ phase: 'calibrate' });
    const place = placement ?? (calibrate ? await calibratePlacement(o, uffds.length, (x, p) => runBench(x, {}, p)) : choosePlacement(o, uffds.length));
    const recording = hooks.recorder ? new BenchRecording(o, kvm ? 'kvm' : 'threads', uffds.length, hooks.recorder) : undefined;
    if (recording) hooks = recording.hooks(hooks);
    if (o.mode) {
      pager = await Pager.start({
        ...(recording?.readers ? { progress: recording.readers, progressStride: SLOT_STRIDE } : {}),
        uffds,
        readersPerUffd: o.readersPerUffd,
        resolution: resolution!,
        pageSize: uffdPageSize(o),
        delayUs: o.delayUs,
        readerCpus: place.readerCpus,
        spinUs: place.spinUs,
      });
    }
    hooks.onEvent?.({ phase: 'ready', testMemory: { start: region.guestAddress, end: region.end } });
    const verify = o.verify && (o.mode !== undefined || region.alias !== undefined);
    const run = kvm
      ? await runKvm(kvm, vm, { ...o, verify }, region, place, hooks)
      : await runThreads({ ...o, verify }, region, place, hooks, recording?.touchers ? { slots: recording.touchers, stride: SLOT_STRIDE } : undefined);
    vm = undefined; // the guest VM took it over and closed it
    hooks.onEvent?.({ phase: 'joined' });
    if (pager) {
      stats = await pager.stop();
      pager = undefined;
    }
    const touchedBytes = o.randomAccess ? NaN : size;
    return {
      options: { ...o, verify },
      backend: kvm ? 'kvm' : 'threads',
      testMemory: { start: region.guestAddress, end: region.end },
      totalNs: run.totalNs,
      vcpus: run.vcpus,
      pager: stats,
      expectedFaults: o.mode ? touchedBytes / uffdPageSize(o) : 0,
      placement: place,
      series: hooks.recorder?.stop(),
    };
  } finally {
    if (pager) await pager.stop().catch(() => undefined);
    for (const u of uffds) u.close();
    source?.close();
    memory.close();
    vm?.close();
    kvm?.close();
  }
}
