import { PostcopyError } from '../../errors.js';
import type { GuestRegion } from '../../memory/guest-memory.js';
import { createGuestVm } from '../../kvm/guest-vm.js';
import type { Kvm } from '../../kvm/system.js';
import { StartGate, VcpuThread } from '../../kvm/vcpu-thread.js';
import type { Vm } from '../../kvm/vm.js';
import { gpa } from '../../address.js';
import { GUEST_PAGE, type BenchOptions } from './options.js';
import { seed64 } from './pattern.js';
import type { BenchHooks } from './run.js';
import type { Placement, VcpuResult } from './result.js';
import { slice, type VcpuRun } from './slices.js';

const TEST_SLOT = 1;

/**
 * Runs the bench guest: one KVM vCPU per worker thread, each touching its slice of test
 * memory (which the caller has registered with userfaultfd and serves). The test memory is
 * one slot; code, descriptor tables and page tables live in a system slot that is never
 * registered.
 */
export async function runKvm(kvm: Kvm, vm: Vm | undefined, o: BenchOptions, region: GuestRegion, place: Placement, hooks: BenchHooks): Promise<VcpuRun> {
  const guestMemfd = o.source === 'guest_memfd' ? { fd: region.backing.fd, offset: 0 } : undefined;
  const g = createGuestVm({
    kvm,
    ...(vm ? { vm } : {}),
    // 4 KiB guest pages over test memory, as memstress maps it: the kernel test's guest mode.
    slots: [{ slot: TEST_SLOT, guestAddress: region.guestAddress, size: region.size, userspaceAddress: region.host, guestPageSize: GUEST_PAGE, ...(guestMemfd ? { guestMemfd } : {}) }],
    vcpus: o.vcpus,
  });
  try {
    const seed = seed64(o.seed);
    for (let i = 0; i < o.vcpus; i++) {
      const s = slice(o, region, i);
      g.start(i, {
        base: gpa(s.gpa),
        pages: s.bytes / GUEST_PAGE,
        stride: GUEST_PAGE,
        verify: o.verify,
        random: o.randomAccess,
        seed,
        writePercent: o.writePercent,
        randomSeed: BigInt((o.seed ^ Math.imul(i + 1, 0x9e3779b9)) >>> 0),
      });
    }
    const gate = new StartGate();
    const threads = await Promise.all(g.vcpus.map((v, i) => VcpuThread.spawn(v, { gate, ...(place.vcpuCpus[i] ? { cpu: place.vcpuCpus[i]![0]! } : {}) })));
    hooks.onEvent?.({ phase: 'started' });
    const t0 = process.hrtime.bigint();
    gate.open();
    let done = 0;
    const reports = await Promise.all(
      threads.map(async (t) => {
        const r = await t.join();
        hooks.onEvent?.({ phase: 'vcpu-done', index: t.vcpuId, done: ++done, of: o.vcpus });
        return r;
      }),
    );
    const totalNs = Number(process.hrtime.bigint() - t0);
    const vcpus: VcpuResult[] = reports.map((r) => {
      if (r.type === 'failed') throw new PostcopyError('ERR_GUEST', `vCPU ${r.vcpuId} stopped: ${r.error}`);
      if (r.type === 'paused') throw new PostcopyError('ERR_GUEST', `vCPU ${r.vcpuId} paused: the bench program never pauses`);
      return {
        index: r.vcpuId,
        ns: Number(r.endNs - r.startNs),
        accesses: r.result.accesses,
        mismatches: r.result.mismatches,
        firstMismatch: r.result.firstMismatch,
        cpuNs: NaN,
        threadId: 0,
      };
    });
    return { totalNs, vcpus };
  } finally {
    g.close();
  }
}
