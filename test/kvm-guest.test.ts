/**
 * The 64-bit guest of `postcopy bench` on the real /dev/kvm, without userfaultfd: its
 * embedded bytes against its listing, the page tables and descriptors the host builds,
 * and the program itself on anonymous memory at 4 GiB, each vCPU in its own worker
 * thread: verification, writes, random access, and the failures it must report.
 */
import assert from 'node:assert/strict';
import { availableParallelism } from 'node:os';
import { assemble, missingBinutils } from './helpers/assemble.js';
import { after, before, describe, test } from 'node:test';
import { gpa, type GuestAddress } from '../src/address.js';
import { InvalidArgumentError } from '../src/errors.js';
import { BENCH_PROGRAM, type BenchArgs, fillPattern, patternMismatches, patternValue } from '../src/kvm/guest/bench-program.js';
import { GuestPort } from '../src/kvm/guest/program.js';
import { systemImageSize } from '../src/kvm/guest/system-image.js';
import { GuestVm } from '../src/kvm/guest-vm.js';
import { Kvm } from '../src/kvm/system.js';
import { type VcpuReport } from '../src/kvm/vcpu-run.js';
import { VcpuThread, runVcpus } from '../src/kvm/vcpu-thread.js';
import { code64Segment, data64Segment, gdtDescriptor, idtGate, tss64Segment } from '../src/kvm/x86/descriptors.js';
import { LARGE_PAGE_SIZE, Pte, buildIdentityMap, identityMapPages } from '../src/kvm/x86/page-tables.js';
import { GiB, MapFlag, MiB } from '../src/memory/constants.js';
import { Mapping } from '../src/memory/mapping.js';
import { kvmAvailability } from '../src/guest/open.js';

const KVM_STATE = kvmAvailability();
const NO_KVM = KVM_STATE.usable ? undefined : `no usable KVM (${KVM_STATE.reason}): load kvm_intel or kvm_amd (or enable nested virtualization) to run the guest tests`;
if (NO_KVM) console.log(`# skipping KVM guest tests: ${NO_KVM}`);

const PAGE = 4096;

const NO_BINUTILS = missingBinutils();
if (NO_BINUTILS) console.log(`# skipping the listing check: ${NO_BINUTILS}`);

describe('the bench program', () => {
  test('its embedded bytes and symbol offsets are what `as` makes of its listing', { skip: NO_BINUTILS }, () => {
    const { code, symbols } = assemble(BENCH_PROGRAM.listing);
    assert.equal(Buffer.from(BENCH_PROGRAM.code).toString('hex'), code.toString('hex'), 'BENCH_CODE_HEX is stale: re-assemble the listing');
    assert.equal(symbols.get('entry'), BENCH_PROGRAM.symbols.entry);
    assert.equal(symbols.get('exception_stubs'), BENCH_PROGRAM.symbols.exception_stubs);
    assert.equal(symbols.get('PORT_DONE'), GuestPort.DONE);
    assert.equal(symbols.get('PORT_EXCEPTION'), GuestPort.EXCEPTION);
    // The last stub must end before `exception`, or the 16-byte stride is broken.
    assert.ok(symbols.get('exception')! >= BENCH_PROGRAM.symbols.exception_stubs + 31 * BENCH_PROGRAM.exceptionStubStride + 4);
  });

  test('the pattern: page a holds a ^ seed, checked without BigInt per page', () => {
    const bytes = new Uint8Array(8 * PAGE);
    const base = 0x1_2345_0000;
    const seed = 0xfedc_ba98_7654_3210n;
    fillPattern(bytes, base, seed);
    const words = new BigUint64Array(bytes.buffer);
    for (let p = 0; p < 8; p++) assert.equal(words[(p * PAGE) / 8], patternValue(base + p * PAGE, seed));
    assert.deepEqual(patternMismatches(bytes, base, seed), []);
    bytes[3 * PAGE + 7] = bytes[3 * PAGE + 7]! ^ 0x80;
    assert.deepEqual(patternMismatches(bytes, base, seed), [base + 3 * PAGE]);
  });
});

describe('x86 tables', () => {
  test('GDT descriptors and an IDT gate encode as the architecture says', () => {
    assert.deepEqual(gdtDescriptor(code64Segment()), [0x00af_9b00_0000_ffffn]);
    assert.deepEqual(gdtDescriptor(data64Segment()), [0x008f_9300_0000_ffffn]);
    assert.deepEqual(gdtDescriptor(tss64Segment(0x1_2345_6000)), [0x2300_8b45_6000_0067n, 0x1n]);
    assert.deepEqual(idtGate(0x1_2345_6789), [0x2345_8e00_0008_6789n, 0x1n]);
  });

  test('identity map: 2 MiB pages for every slot, up to and beyond 64 GiB', () => {
    const ranges = [
      { start: 0, size: 2 * MiB },
      { start: 4 * GiB, size: 64 * GiB },
      { start: 100 * GiB + 4096, size: 4096 }, // unaligned: its whole 2 MiB page is mapped
    ];
    const pages = identityMapPages(ranges);
    assert.equal(pages, 1 + 1 + 1 + 64 + 1, 'PML4, one PDPT, PDs for GiB 0, 4..67 and 100');
    const memory = new Map<number, bigint[]>();
    let next = 0x1000;
    const pml4 = buildIdentityMap(
      {
        allocPage: () => {
          memory.set(next, new Array<bigint>(512).fill(0n));
          return (next += 0x1000) - 0x1000;
        },
        writeEntry: (table, index, value) => (memory.get(table)![index] = value),
      },
      ranges,
      48,
    );
    assert.equal(memory.size, pages);
    const walk = (va: number): number | undefined => {
      const entry = (table: number, index: number) => memory.get(table)![index]!;
      const l4 = entry(pml4, Math.floor(va / 2 ** 39) % 512);
      if (!(l4 & Pte.PRESENT)) return undefined;
      const l3 = entry(Number(l4 & ~0xfffn), Math.floor(va / 2 ** 30) % 512);
      if (!(l3 & Pte.PRESENT)) return undefined;
      const l2 = entry(Number(l3 & ~0xfffn), Math.floor(va / 2 ** 21) % 512);
      if (!(l2 & Pte.PRESENT)) return undefined;
      assert.ok(l2 & Pte.LARGE, 'a 2 MiB leaf');
      assert.ok(l2 & Pte.WRITABLE);
      return Number(l2 & ~(BigInt(LARGE_PAGE_SIZE) - 1n)) + (va % LARGE_PAGE_SIZE);
    };
    for (const va of [0, 0x1234, 4 * GiB, 4 * GiB + 0x1235, 68 * GiB - 8, 100 * GiB, 100 * GiB + 2 * MiB - 1]) assert.equal(walk(va), va, `0x${va.toString(16)}`);
    for (const va of [2 * MiB, 4 * GiB - 1, 68 * GiB, 100 * GiB + 2 * MiB]) assert.equal(walk(va), undefined, `0x${va.toString(16)} is not mapped`);
    assert.throws(() => buildIdentityMap({ allocPage: () => 0, writeEntry: () => undefined }, [{ start: 2 ** 36, size: 4096 }], 36), InvalidArgumentError);
  });

  test('the system memory grows with the page tables it must hold', () => {
    assert.equal(systemImageSize(0, BENCH_PROGRAM, 2, [{ start: 4 * GiB, size: 16 * MiB }]), 2 * MiB);
    assert.equal(systemImageSize(0, BENCH_PROGRAM, 2, [{ start: 4 * GiB, size: 1024 * GiB }]), 6 * MiB);
  });
});

const SIZE = 16 * MiB;
const BASE = gpa(4 * GiB);
const VCPUS = 2;
const SEED = 0x5eed_0000_c0de_0000n;

describe('the bench guest on anonymous memory at 4 GiB, two vCPUs in worker threads', { skip: NO_KVM }, () => {
  let kvm: Kvm;
  let memory: Mapping;
  let bytes: Uint8Array;
  let guest: GuestVm;
  const pages = SIZE / PAGE;
  const slice = SIZE / VCPUS;

  before(() => {
    kvm = Kvm.open();
    memory = Mapping.map(SIZE, { flags: MapFlag.PRIVATE | MapFlag.ANONYMOUS | MapFlag.NORESERVE });
    bytes = memory.bytes();
    guest = GuestVm.create({ kvm, slots: [{ slot: 1, guestAddress: BASE, size: SIZE, userspaceAddress: memory.address }], vcpus: VCPUS });
  });
  after(() => {
    guest?.close();
    memory?.unmap();
    kvm?.close();
  });

  /** Starts each vCPU on its slice with `args`, runs them all in workers (pinned to CPUs 0 and 1 when there are two) and returns their reports. */
  async function run(args: Omit<BenchArgs, 'base' | 'pages'>, slices = VCPUS): Promise<VcpuReport[]> {
    const vcpus = guest.vcpus.slice(0, slices);
    vcpus.forEach((v, i) => guest.start(v, { ...args, base: gpa(BASE + i * slice), pages: slice / args.stride }));
    const cpus = availableParallelism() >= 2 ? [0, 1] : [];
    return runVcpus(vcpus, { cpus });
  }

  function done(report: VcpuReport) {
    assert.equal(report.type, 'done', report.type === 'failed' ? report.error : '');
    assert.ok(report.type === 'done');
    return report;
  }

  const sequential = { stride: PAGE, verify: true, random: false, seed: SEED, writePercent: 100, randomSeed: 1n };

  test('the system slot sits below the test memory and its page tables map it', () => {
    const { system } = guest;
    assert.equal(system.guestAddress, 0);
    assert.equal(system.slot, 0);
    assert.ok(system.size % LARGE_PAGE_SIZE === 0 && system.size <= BASE);
    assert.equal(system.layout.stackTops.length, VCPUS);
    assert.ok(guest.physicalBits >= 36);
  });

  test('verify + write every page: no mismatch, one access per page, and each vCPU timed', async () => {
    fillPattern(bytes, BASE, SEED);
    const reports = (await run(sequential)).map(done);
    let accesses = 0;
    for (const r of reports) {
      assert.deepEqual(r.result, { mismatches: 0, firstMismatch: 0, accesses: slice / PAGE });
      assert.ok(r.exit.reason === 'io' && r.exit.port === GuestPort.DONE);
      assert.ok(r.ns > 0n && r.endNs >= r.startNs && r.runs >= 1);
      assert.equal(guest.result(r.vcpuId).accesses, slice / PAGE, 'the registers stay readable after the worker ends');
      accesses += r.result.accesses;
    }
    assert.equal(accesses, pages);
    assert.deepEqual(patternMismatches(bytes, BASE, SEED), []);
  });

  test('the host sees what the guest wrote', async () => {
    const other = SEED ^ 0xffff_ffff_ffff_ffffn;
    // No verify (the memory holds SEED's pattern), store OTHER's: every page must change.
    for (const r of (await run({ ...sequential, verify: false, seed: other })).map(done)) assert.equal(r.result.accesses, slice / PAGE);
    assert.deepEqual(patternMismatches(bytes, BASE, other), [], 'every page holds the new pattern');
    // And back, verified: the guest reads what it wrote.
    for (const r of (await run({ ...sequential, seed: other })).map(done)) assert.equal(r.result.mismatches, 0);
    fillPattern(bytes, BASE, SEED);
  });

  test('one corrupted page is exactly one mismatch, at its address', async () => {
    fillPattern(bytes, BASE, SEED);
    const corrupt = BASE + slice + 37 * PAGE; // in vCPU 1's slice
    bytes[corrupt - BASE + 3] = bytes[corrupt - BASE + 3]! ^ 0x10;
    const [first, second] = (await run({ ...sequential, writePercent: 0 })).map(done);
    assert.deepEqual(first!.result, { mismatches: 0, firstMismatch: 0, accesses: slice / PAGE });
    assert.deepEqual(second!.result, { mismatches: 1, firstMismatch: corrupt, accesses: slice / PAGE });
    fillPattern(bytes, BASE, SEED);
  });

  test('write percent 0 leaves memory unchanged', async () => {
    fillPattern(bytes, BASE, SEED);
    const before = bytes.slice();
    // A different seed and no verify: any store would show as a changed page.
    for (const r of (await run({ ...sequential, verify: false, seed: ~SEED, writePercent: 0 })).map(done)) assert.equal(r.result.accesses, slice / PAGE);
    assert.ok(Buffer.from(bytes).equals(before), 'not a byte changed');
  });

  test('random access: `pages` accesses; write percent 50 writes some pages and not others', async () => {
    fillPattern(bytes, BASE, SEED);
    for (const r of (await run({ ...sequential, random: true, writePercent: 50, randomSeed: 42n })).map(done)) {
      assert.deepEqual(r.result, { mismatches: 0, firstMismatch: 0, accesses: slice / PAGE });
    }
    const other = SEED ^ 0xabcdn;
    (await run({ ...sequential, verify: false, random: true, seed: other, writePercent: 50, randomSeed: 7n })).map(done);
    const unchanged = patternMismatches(bytes, BASE, other, PAGE, pages).length; // pages not holding OTHER's pattern
    const written = pages - unchanged;
    // Each page is picked ~Poisson(1) times and written with probability 1/2 per pick: ~39% end up written.
    assert.ok(written > pages * 0.3 && written < pages * 0.5, `${written} of ${pages} pages written`);
    fillPattern(bytes, BASE, SEED);
  });

  test('a stride of 2 MiB touches one page per huge page', async () => {
    fillPattern(bytes, BASE, SEED, LARGE_PAGE_SIZE);
    for (const r of (await run({ ...sequential, stride: LARGE_PAGE_SIZE })).map(done)) {
      assert.deepEqual(r.result, { mismatches: 0, firstMismatch: 0, accesses: slice / LARGE_PAGE_SIZE });
    }
    fillPattern(bytes, BASE, SEED);
  });

  test('a page fault in the guest is reported with vector, rip and address, not a hang', async () => {
    const unmapped = 2 ** 40; // no page table maps it
    guest.start(0, { ...sequential, base: gpa(unmapped), pages: 1 });
    const thread = await VcpuThread.spawn(guest.vcpus[0]!);
    const report = await thread.join();
    assert.equal(report.type, 'failed');
    assert.ok(report.type === 'failed');
    assert.equal(report.exception?.name, '#PF');
    assert.equal(report.exception?.cr2, BigInt(unmapped));
    assert.match(report.error, /vCPU 0: guest exception #PF at rip 0x[0-9a-f]+ \(error code 0x0, address 0x10000000000\)/);
    const code = guest.system.layout.code;
    assert.ok(report.exception!.rip >= BigInt(code) && report.exception!.rip < BigInt(code + BENCH_PROGRAM.code.length), 'rip is in the program');
  });

  test('pinning to a CPU that does not exist is a failed report, not a hang', async () => {
    guest.start(0, { ...sequential, base: BASE, pages: 1 });
    const thread = await VcpuThread.spawn(guest.vcpus[0]!, { cpu: 1023 });
    const report = await thread.join();
    assert.equal(report.type, 'failed');
    assert.ok(report.type === 'failed');
    assert.match(report.error, /cannot pin to CPU 1023/);
  });
});

describe('the bench guest on other memory', { skip: NO_KVM }, () => {
  test('slots at 4 GiB and at 64 GiB (beyond a 36-bit MAXPHYADDR) in one guest', async (t) => {
    const kvm = Kvm.open();
    const high = gpa(64 * GiB);
    if (kvm.supportedCpuid().length === 0) return t.skip('no CPUID from KVM');
    const low = Mapping.map(2 * MiB, { flags: MapFlag.PRIVATE | MapFlag.ANONYMOUS });
    const top = Mapping.map(2 * MiB, { flags: MapFlag.PRIVATE | MapFlag.ANONYMOUS });
    let guest: GuestVm | undefined;
    try {
      guest = GuestVm.create({
        kvm,
        slots: [
          { slot: 1, guestAddress: BASE, size: low.length, userspaceAddress: low.address },
          { slot: 2, guestAddress: high, size: top.length, userspaceAddress: top.address },
        ],
        vcpus: 2,
      });
      if (guest.physicalBits <= 36) return t.skip(`MAXPHYADDR is ${guest.physicalBits} here`);
      fillPattern(low.bytes(), BASE, SEED);
      fillPattern(top.bytes(), high, SEED);
      const args = { stride: PAGE, verify: true, random: false, seed: SEED, writePercent: 100, randomSeed: 1n, pages: 512 };
      guest.start(0, { ...args, base: BASE });
      guest.start(1, { ...args, base: high });
      const reports = await runVcpus(guest.vcpus);
      for (const r of reports) {
        assert.equal(r.type, 'done', r.type === 'failed' ? r.error : '');
        assert.ok(r.type === 'done');
        assert.deepEqual(r.result, { mismatches: 0, firstMismatch: 0, accesses: 512 });
      }
    } finally {
      guest?.close();
      low.unmap();
      top.unmap();
      kvm.close();
    }
  });

  test('a guest_memfd slot (created from the VM the GuestVm then takes over)', async (t) => {
    const kvm = Kvm.open();
    const vm = kvm.createVm();
    if (vm.checkExtension('KVM_CAP_GUEST_MEMFD') === 0) {
      vm.close();
      kvm.close();
      return t.skip('no guest_memfd in this KVM (KVM_CAP_GUEST_MEMFD)');
    }
    let fd: number;
    try {
      fd = vm.createGuestMemfd(4 * MiB);
    } catch (e) {
      vm.close();
      kvm.close();
      return t.skip(`cannot create a mappable guest_memfd: ${(e as Error).message}`);
    }
    const memory = Mapping.map(4 * MiB, { flags: MapFlag.SHARED, fd });
    const { native } = await import('../src/native/binding.js');
    let guest: GuestVm | undefined;
    try {
      guest = GuestVm.create({ kvm, vm, slots: [{ slot: 1, guestAddress: BASE, size: memory.length, userspaceAddress: memory.address, guestMemfd: { fd, offset: 0 } }], vcpus: 1 });
      const view = memory.bytes();
      fillPattern(view, BASE, SEED);
      view[5 * PAGE] = view[5 * PAGE]! ^ 1;
      guest.start(0, { stride: PAGE, verify: true, random: false, seed: SEED, writePercent: 100, randomSeed: 1n, base: BASE as GuestAddress, pages: memory.length / PAGE });
      const [report] = await runVcpus(guest.vcpus);
      assert.equal(report!.type, 'done', report!.type === 'failed' ? report!.error : '');
      assert.ok(report!.type === 'done');
      assert.deepEqual(report!.result, { mismatches: 1, firstMismatch: BASE + 5 * PAGE, accesses: memory.length / PAGE });
      assert.deepEqual(patternMismatches(view, BASE, SEED), [], 'the guest rewrote the corrupted page through the guest_memfd');
    } finally {
      if (guest) guest.close();
      else vm.close();
      memory.unmap();
      native.close(fd);
      kvm.close();
    }
  });
});
