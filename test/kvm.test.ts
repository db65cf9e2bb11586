/**
 * The KVM layer on the real /dev/kvm: memory slots, vCPUs, their registers, KVM_RUN and
 * the decoding of its exits, and the lifecycle of each handle. The guest here is the
 * smallest there is (a few real-mode instructions); the 64-bit guests are in
 * kvm-guest.test.ts.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { gpa, hva } from '../src/address.js';
import { ClosedError, InvalidArgumentError } from '../src/errors.js';
import { KvmExitReason, KvmIoctl, KVM_MEMORY_EXIT_FLAG_PRIVATE, StructSize } from '../src/kvm/constants.js';
import { KvmRunOffset, decodeExit, describeExit } from '../src/kvm/exit.js';
import { Kvm } from '../src/kvm/system.js';
import { Vcpu } from '../src/kvm/vcpu.js';
import type { Vm } from '../src/kvm/vm.js';
import { cpuidEntry, physicalAddressBits } from '../src/kvm/x86/cpuid.js';
import { REGS_FIELDS, type Regs, type Sregs, packRegs, packSregs, unpackRegs, unpackSregs } from '../src/kvm/x86/regs.js';
import { MapFlag } from '../src/memory/constants.js';
import { Mapping } from '../src/memory/mapping.js';
import { SystemError, isSystemError } from '../src/native/errors.js';
import { kvmAvailability } from '../src/guest/open.js';

const KVM_STATE = kvmAvailability();
const NO_KVM = KVM_STATE.usable ? undefined : `no usable KVM (${KVM_STATE.reason}): load kvm_intel or kvm_amd (or enable nested virtualization) to run the KVM tests`;
if (NO_KVM) console.log(`# skipping KVM tests: ${NO_KVM}`);

const PORT = 0x10;
const VALUE = 0x1234;
const CODE_AT = 0x1000;
/**
 * Real mode, at CS:IP 0000:1000:  mov $0x1234, %ax;  out %ax, $0x10;  hlt.
 * A vCPU starts in real mode, so this needs no descriptor or page tables at all.
 */
const OUT_THEN_HLT = [0xb8, VALUE & 0xff, VALUE >> 8, 0xe7, PORT, 0xf4];

/** A VM with 64 KiB of memory at guest address 0 holding `code` at CODE_AT, and one vCPU about to run it. */
function trivialGuest(kvm: Kvm, code: number[] = OUT_THEN_HLT): { vm: Vm; vcpu: Vcpu; memory: Mapping } {
  const memory = Mapping.map(0x10000, { flags: MapFlag.PRIVATE | MapFlag.ANONYMOUS });
  memory.bytes().set(code, CODE_AT);
  const vm = kvm.createVm();
  vm.setUserMemoryRegion(0, { guestAddress: gpa(0), size: memory.length, userspaceAddress: memory.address });
  const vcpu = vm.createVcpu(0);
  const sregs = vcpu.getSregs();
  sregs.cs = { ...sregs.cs, base: 0n, selector: 0 }; // reset state is CS base 0xffff0000
  vcpu.setSregs(sregs);
  vcpu.setRegs({ ...vcpu.getRegs(), rip: BigInt(CODE_AT), rflags: 2n });
  return { vm, vcpu, memory };
}

function sampleRegs(): Regs {
  const r = {} as Regs;
  // Distinct full-width values, so a field written to the wrong offset shows.
  REGS_FIELDS.forEach((f, i) => (r[f] = 0x0102_0304_0506_0700n + BigInt(i) * 0x1111_1111_1111n));
  r.rflags = 0x202n; // bit 1 is fixed; IF set. Other bits KVM may refuse or mask.
  return r;
}

describe('struct packing (no KVM needed)', () => {
  test('ioctl numbers of the vCPU layer match the kernel headers', () => {
    assert.equal(KvmIoctl.KVM_GET_VCPU_MMAP_SIZE, 0xae04);
    assert.equal(KvmIoctl.KVM_GET_SUPPORTED_CPUID, 0xc008ae05);
    assert.equal(KvmIoctl.KVM_SET_REGS, 0x4090ae82);
    assert.equal(KvmIoctl.KVM_SET_SREGS, 0x4138ae84);
    assert.equal(KvmIoctl.KVM_SET_CPUID2, 0x4008ae90);
    assert.equal(KvmIoctl.KVM_GET_CPUID2, 0xc008ae91);
  });

  test('kvm_regs: every field at its offset, in both directions', () => {
    const regs = sampleRegs();
    const bytes = packRegs(regs);
    assert.equal(bytes.length, StructSize.kvm_regs);
    const v = new DataView(bytes.buffer);
    assert.equal(v.getBigUint64(0, true), regs.rax);
    assert.equal(v.getBigUint64(8 * 8, true), regs.r8);
    assert.equal(v.getBigUint64(16 * 8, true), regs.rip);
    assert.equal(v.getBigUint64(17 * 8, true), regs.rflags);
    assert.deepEqual(unpackRegs(bytes), regs);
  });

  test('kvm_sregs: every field round-trips, at the kernel offsets', () => {
    const bytes = new Uint8Array(StructSize.kvm_sregs);
    for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 7 + 3) & 0xff;
    // Padding of the dtables is not a field: zero it so the round trip compares fields only.
    for (const at of [192 + 10, 192 + 16 + 10]) bytes.fill(0, at, at + 6);
    const sregs: Sregs = unpackSregs(bytes);
    assert.deepEqual(packSregs(sregs), bytes);
    const v = new DataView(bytes.buffer);
    assert.equal(sregs.cs.base, v.getBigUint64(0, true));
    assert.equal(sregs.ldt.selector, v.getUint16(7 * 24 + 12, true));
    assert.equal(sregs.gdt.limit, v.getUint16(192 + 8, true));
    assert.equal(sregs.efer, v.getBigUint64(224 + 5 * 8, true));
    assert.equal(sregs.interruptBitmap[3], v.getBigUint64(304, true));
  });

  test('decodeExit: memory_fault, fail_entry, internal_error, mmio, unknown', () => {
    const run = new DataView(new ArrayBuffer(4096));
    const at = KvmRunOffset.exit;
    run.setUint32(KvmRunOffset.exit_reason, KvmExitReason.KVM_EXIT_MEMORY_FAULT, true);
    run.setBigUint64(at, BigInt(KVM_MEMORY_EXIT_FLAG_PRIVATE), true);
    run.setBigUint64(at + 8, 0x1_0000_3000n, true);
    run.setBigUint64(at + 16, 4096n, true);
    assert.deepEqual(decodeExit(run, 'EFAULT'), { reason: 'memory_fault', flags: 8, gpa: 0x1_0000_3000, size: 4096, errno: 'EFAULT' });

    run.setUint32(KvmRunOffset.exit_reason, KvmExitReason.KVM_EXIT_FAIL_ENTRY, true);
    run.setBigUint64(at, 0x80000021n, true);
    run.setUint32(at + 8, 1, true);
    assert.deepEqual(decodeExit(run), { reason: 'fail_entry', hardwareEntryFailureReason: 0x80000021n, cpu: 1 });

    run.setUint32(KvmRunOffset.exit_reason, KvmExitReason.KVM_EXIT_INTERNAL_ERROR, true);
    run.setUint32(at, 1, true);
    run.setUint32(at + 4, 2, true);
    run.setBigUint64(at + 8, 0xaan, true);
    run.setBigUint64(at + 16, 0xbbn, true);
    const internal = decodeExit(run);
    assert.deepEqual(internal, { reason: 'internal_error', suberror: 1, suberrorName: 'KVM_INTERNAL_ERROR_EMULATION', data: [0xaan, 0xbbn] });
    assert.match(describeExit(internal), /KVM_INTERNAL_ERROR_EMULATION data \[0xaa 0xbb\]/);

    run.setUint32(KvmRunOffset.exit_reason, KvmExitReason.KVM_EXIT_MMIO, true);
    run.setBigUint64(at, 0xfee00000n, true);
    for (let i = 0; i < 8; i++) run.setUint8(at + 8 + i, i + 1);
    run.setUint32(at + 16, 4, true);
    run.setUint8(at + 20, 1);
    assert.deepEqual(decodeExit(run), { reason: 'mmio', physAddr: 0xfee00000, data: new Uint8Array([1, 2, 3, 4]), len: 4, isWrite: true });

    run.setUint32(KvmRunOffset.exit_reason, KvmExitReason.KVM_EXIT_DIRTY_RING_FULL, true);
    assert.deepEqual(decodeExit(run), { reason: 'unknown', code: 31, name: 'KVM_EXIT_DIRTY_RING_FULL' });
  });
});

describe('KVM vCPUs', { skip: NO_KVM }, () => {
  test('a guest OUT is an io exit with its port and value; then HLT is an hlt exit', () => {
    const kvm = Kvm.open();
    const { vm, vcpu, memory } = trivialGuest(kvm);
    try {
      const exit = vcpu.run();
      assert.equal(exit.reason, 'io', describeExit(exit));
      assert.ok(exit.reason === 'io');
      assert.equal(exit.direction, 'out');
      assert.equal(exit.port, PORT);
      assert.equal(exit.size, 2);
      assert.equal(exit.count, 1);
      assert.equal(exit.value, VALUE);
      assert.deepEqual([...vcpu.ioData(exit)], [VALUE & 0xff, VALUE >> 8]);
      assert.equal(vcpu.getRegs().rip, BigInt(CODE_AT + 5), 'RIP is past the OUT');
      assert.equal(vcpu.run().reason, 'hlt');
    } finally {
      vm.close();
      memory.unmap();
      kvm.close();
    }
  });

  test('KVM_SET_REGS then KVM_GET_REGS returns every field; KVM_SET_SREGS round-trips', () => {
    const kvm = Kvm.open();
    const { vm, vcpu, memory } = trivialGuest(kvm);
    try {
      const regs = sampleRegs();
      vcpu.setRegs(regs);
      assert.deepEqual(vcpu.getRegs(), regs);
      const sregs = vcpu.getSregs();
      sregs.cr2 = 0xdead_b000n;
      sregs.gdt = { base: 0x5000n, limit: 0x27 };
      sregs.ds = { ...sregs.ds, base: 0x1230n, selector: 0x123 };
      vcpu.setSregs(sregs);
      assert.deepEqual(vcpu.getSregs(), sregs);
    } finally {
      vm.close();
      memory.unmap();
      kvm.close();
    }
  });

  test('immediate_exit makes KVM_RUN return EINTR: an intr exit, not a throw', () => {
    const kvm = Kvm.open();
    const { vm, vcpu, memory } = trivialGuest(kvm);
    try {
      vcpu.immediateExit = true;
      assert.deepEqual(vcpu.run(), { reason: 'intr', errno: 'EINTR' });
      assert.equal(vcpu.getRegs().rip, BigInt(CODE_AT), 'the guest did not run');
      vcpu.immediateExit = false;
      assert.equal(vcpu.run().reason, 'io');
    } finally {
      vm.close();
      memory.unmap();
      kvm.close();
    }
  });

  test('a borrowed handle drives the same vCPU and closes only its own view', () => {
    const kvm = Kvm.open();
    const { vm, vcpu, memory } = trivialGuest(kvm);
    try {
      const borrowed = Vcpu.borrow(vcpu.handle);
      assert.equal(borrowed.owned, false);
      assert.deepEqual(borrowed.handle, vcpu.handle);
      assert.equal(borrowed.run().reason, 'io');
      borrowed.close();
      assert.throws(() => borrowed.run(), ClosedError);
      assert.equal(vcpu.getRegs().rip, BigInt(CODE_AT + 5), 'the owner still works and sees the run');
      assert.equal(vcpu.run().reason, 'hlt');
    } finally {
      vm.close();
      memory.unmap();
      kvm.close();
    }
  });

  test('KVM_GET_SUPPORTED_CPUID lists long mode and the address width; KVM_SET_CPUID2 takes it', () => {
    const kvm = Kvm.open();
    const vm = kvm.createVm();
    try {
      const cpuid = kvm.supportedCpuid();
      const ext = cpuidEntry(cpuid, 0x8000_0001);
      assert.ok(ext, 'leaf 0x80000001 is there');
      assert.ok(ext.edx & (1 << 29), 'CPUID.80000001h:EDX.LM');
      const bits = physicalAddressBits(cpuid);
      assert.ok(bits >= 36 && bits <= 52, `MAXPHYADDR ${bits}`);
      const vcpu = vm.createVcpu(0);
      vcpu.setCpuid(cpuid);
      assert.equal(physicalAddressBits(vcpu.getCpuid()), bits);
    } finally {
      vm.close();
      kvm.close();
    }
  });

  test('memory slots: overlapping is refused with the slot and range named; delete frees the range', () => {
    const kvm = Kvm.open();
    const vm = kvm.createVm();
    const memory = Mapping.map(0x20000, { flags: MapFlag.PRIVATE | MapFlag.ANONYMOUS });
    try {
      assert.equal(vm.hasUserMemory2, vm.checkExtension('KVM_CAP_USER_MEMORY2') > 0);
      vm.setUserMemoryRegion(1, { guestAddress: gpa(0x10000), size: 0x10000, userspaceAddress: memory.address });
      let refused: unknown;
      try {
        vm.setUserMemoryRegion(2, { guestAddress: gpa(0x18000), size: 0x10000, userspaceAddress: memory.at(0x10000) });
      } catch (e) {
        refused = e;
      }
      assert.ok(isSystemError(refused, 'EEXIST'), String(refused));
      assert.match((refused as SystemError).message, /slot 2 gpa \[0x18000, 0x28000\): EEXIST/);
      vm.deleteUserMemoryRegion(1);
      vm.setUserMemoryRegion(2, { guestAddress: gpa(0x18000), size: 0x10000, userspaceAddress: memory.at(0x10000) });
      assert.throws(() => vm.setUserMemoryRegion(3, { guestAddress: gpa(0x1234), size: 0x1000, userspaceAddress: memory.address }), InvalidArgumentError);
      assert.throws(() => vm.setUserMemoryRegion(3, { guestAddress: gpa(0x40000), size: 0x1000, userspaceAddress: hva(memory.address + 8) }), InvalidArgumentError);
    } finally {
      vm.close();
      memory.unmap();
      kvm.close();
    }
  });

  test('close: the VM closes its vCPUs; twice is safe; use after close throws ClosedError', () => {
    const kvm = Kvm.open();
    const { vm, vcpu, memory } = trivialGuest(kvm);
    const second = vm.createVcpu(1);
    assert.deepEqual(vm.vcpus, [vcpu, second]);
    second.close();
    second.close();
    assert.throws(() => second.getRegs(), ClosedError);
    vm.close();
    vm.close();
    assert.ok(vcpu.closed, 'vm.close() closed the vCPU');
    assert.throws(() => vcpu.run(), ClosedError);
    assert.throws(() => vcpu.getSregs(), ClosedError);
    assert.throws(() => vcpu.setRegs(sampleRegs()), ClosedError);
    assert.throws(() => vm.createVcpu(2), ClosedError);
    assert.throws(() => vm.setUserMemoryRegion(1, { guestAddress: gpa(0), size: 4096, userspaceAddress: memory.address }), ClosedError);
    memory.unmap();
    kvm.close();
  });

  test('vCPU ids are unique per VM: a second KVM_CREATE_VCPU of the same id is EEXIST', () => {
    const kvm = Kvm.open();
    const vm = kvm.createVm();
    try {
      vm.createVcpu(0);
      assert.throws(() => vm.createVcpu(0), (e) => isSystemError(e, 'EEXIST'));
      assert.throws(() => vm.createVcpu(-1), InvalidArgumentError);
      assert.equal(vm.vcpus.length, 1);
    } finally {
      vm.close();
      kvm.close();
    }
  });
});
