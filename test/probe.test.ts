/**
 * The probe's report on this machine, checked against the kernel itself: each claim the
 * report makes is tried again here, directly, and the two must agree. Nothing is
 * hard-coded about what this kernel grants, except the KVM ABI numbers.
 */
import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import { ClosedError } from '../src/errors.js';
import { GuestMemfdFlag, KvmCap, KvmIoctl } from '../src/kvm/constants.js';
import { Kvm } from '../src/kvm/system.js';
import { GUEST_MEMFD_MAPPABLE } from '../src/kvm/vm.js';
import { BACKING_SOURCES, Backing } from '../src/memory/backing.js';
import { isSystemError } from '../src/native/errors.js';
import { type ProbeReport, probe, walkFindings } from '../src/probe/index.js';
import { Feature, namesOf } from '../src/uffd/constants.js';
import { Userfaultfd } from '../src/uffd/userfaultfd.js';
import { hex } from '../src/util/format.js';
import { kvmAvailability } from '../src/guest/open.js';

// POSTCOPY_NO_KVM=1 hides /dev/kvm from the probe too: ask the same way it does.
const HAVE_KVM = kvmAvailability().usable;
const NO_KVM = HAVE_KVM ? undefined : '/dev/kvm is missing: load kvm_intel or kvm_amd to run the KVM checks';
if (NO_KVM) console.log(`# skipping KVM checks: ${NO_KVM}`);

let report: ProbeReport;
before(() => {
  report = probe();
});

describe('KVM ABI numbers', () => {
  test('ioctl numbers encode as the kernel headers do', () => {
    // The values of the C macros on x86_64 (kvm.h), computed by the compiler.
    assert.equal(KvmIoctl.KVM_GET_API_VERSION, 0xae00);
    assert.equal(KvmIoctl.KVM_CREATE_VM, 0xae01);
    assert.equal(KvmIoctl.KVM_CHECK_EXTENSION, 0xae03);
    assert.equal(KvmIoctl.KVM_CREATE_VCPU, 0xae41);
    assert.equal(KvmIoctl.KVM_RUN, 0xae80);
    assert.equal(KvmIoctl.KVM_SET_USER_MEMORY_REGION, 0x4020ae46);
    assert.equal(KvmIoctl.KVM_SET_USER_MEMORY_REGION2, 0x40a0ae49);
    assert.equal(KvmIoctl.KVM_ENABLE_CAP, 0x4068aea3);
    assert.equal(KvmIoctl.KVM_GET_DIRTY_LOG, 0x4010ae42);
    assert.equal(KvmIoctl.KVM_CLEAR_DIRTY_LOG, 0xc018aec0);
    assert.equal(KvmIoctl.KVM_GET_REGS, 0x8090ae81);
    assert.equal(KvmIoctl.KVM_GET_SREGS, 0x8138ae83);
    assert.equal(KvmIoctl.KVM_CREATE_GUEST_MEMFD, 0xc040aed4);
  });
});

describe('every finding', () => {
  test('that is not ok says why and what to do', () => {
    let count = 0;
    for (const [path, f] of walkFindings(report)) {
      count++;
      assert.ok(['ok', 'missing', 'skipped'].includes(f.status), `${path}: status ${f.status}`);
      assert.ok(f.detail.length > 0, `${path}: no detail`);
      if (f.status !== 'ok') assert.ok(f.remedy && f.remedy.length > 0, `${path} (${f.status}: ${f.detail}) has no remedy`);
    }
    assert.ok(count > 30, `the walk found only ${count} findings`);
  });

  test('the report is plain data: JSON round-trips it unchanged', () => {
    assert.deepEqual(JSON.parse(JSON.stringify(report)), report);
  });
});

describe('userfaultfd', () => {
  test('features and ioctls are what UFFDIO_API answers', (t) => {
    if (report.userfaultfd.usable.status !== 'ok') return t.skip(`no usable userfaultfd here: ${report.userfaultfd.usable.remedy}`);
    const api = Userfaultfd.query();
    assert.ok(report.userfaultfd.features);
    assert.equal(report.userfaultfd.features.mask, hex(api.features));
    assert.deepEqual(report.userfaultfd.features.names, namesOf(Feature, api.features));
    assert.ok(report.userfaultfd.ioctls.includes('REGISTER'));
  });

  test('how it opens agrees with opening it', (t) => {
    for (const via of ['syscall', 'device'] as const) {
      let opened: boolean;
      try {
        Userfaultfd.query(via);
        opened = true;
      } catch {
        opened = false;
      }
      assert.equal(report.userfaultfd[via].status === 'ok', opened, `${via}: report says ${report.userfaultfd[via].detail}`);
    }
    if (report.userfaultfd.usable.status !== 'ok') t.diagnostic(`not usable: ${report.userfaultfd.usable.detail}`);
  });
});

describe('backing sources', () => {
  test('every source is reported, with all three modes', () => {
    assert.deepEqual(
      report.backings.map((b) => b.source),
      [...BACKING_SOURCES],
    );
    for (const b of report.backings) assert.deepEqual(Object.keys(b.register), ['MISSING', 'MINOR', 'WP']);
  });

  test('shmem MINOR registration works where the kernel grants MINOR_SHMEM, and allows CONTINUE', (t) => {
    if (!report.userfaultfd.features?.names.includes('MINOR_SHMEM')) return t.skip('the kernel does not grant MINOR_SHMEM');
    const shmem = report.backings.find((b) => b.source === 'shmem')!;
    assert.equal(shmem.register.MINOR.status, 'ok', shmem.register.MINOR.detail);
    assert.ok(shmem.register.MINOR.ioctls?.includes('CONTINUE'));
  });

  test('a registered mode allows the ioctl that resolves its faults', () => {
    for (const b of report.backings) {
      if (b.register.MINOR.status === 'ok') assert.ok(b.register.MINOR.ioctls?.includes('CONTINUE'), `${b.source} MINOR`);
      if (b.register.WP.status === 'ok') assert.ok(b.register.WP.ioctls?.includes('WRITEPROTECT'), `${b.source} WP`);
      if (b.register.MISSING.status === 'ok') assert.ok(b.register.MISSING.ioctls?.includes('COPY'), `${b.source} MISSING`);
    }
  });

  test('an untried hugetlb source says so, with the command that reserves pages', () => {
    for (const b of report.backings) {
      if (b.create.status !== 'skipped' || !/no hugepages available/.test(b.create.detail)) continue;
      assert.match(b.create.detail, /^not tried/);
      assert.match(b.create.remedy ?? '', /nr_hugepages/);
      for (const mode of Object.values(b.register)) assert.equal(mode.status, 'skipped');
    }
  });

  test('guest_memfd: the report agrees with registering its mapping directly', { skip: NO_KVM }, (t) => {
    if (report.kvm.vm.status !== 'ok') return t.skip(`no KVM VM here: ${report.kvm.vm.detail}`);
    if (report.userfaultfd.usable.status !== 'ok') return t.skip('no usable userfaultfd here');
    const gmem = report.backings.find((b) => b.source === 'guest_memfd')!;
    const kvm = Kvm.open();
    const vm = kvm.createVm();
    const backing = Backing.create('guest_memfd', 4096, { createGuestMemfd: vm.guestMemfdFactory() });
    try {
      assert.equal(gmem.create.status, 'ok', gmem.create.detail);
      for (const mode of ['MISSING', 'MINOR', 'WP'] as const) {
        const uffd = Userfaultfd.open();
        let refused: unknown;
        try {
          uffd.register(backing.primary.address, 4096, [mode]);
        } catch (e) {
          refused = e;
        } finally {
          uffd.close();
        }
        const finding = gmem.register[mode];
        if (refused === undefined) {
          assert.equal(finding.status, 'ok', `${mode}: registering works, the report says ${finding.detail}`);
        } else {
          assert.ok(isSystemError(refused, 'EINVAL'), `${mode}: ${(refused as Error).message}`);
          assert.equal(finding.status, 'missing');
          assert.match(finding.detail, /EINVAL/);
          assert.match(finding.detail, /userfaultfd on guest_memfd is not supported by this kernel/);
          assert.ok(finding.remedy);
        }
      }
    } finally {
      backing.close();
      vm.close();
      kvm.close();
    }
  });
});

describe('KVM', { skip: NO_KVM }, () => {
  test('capabilities are what KVM_CHECK_EXTENSION answers on a VM', (t) => {
    if (report.kvm.vm.status !== 'ok') return t.skip(`no KVM VM here: ${report.kvm.vm.detail}`);
    const kvm = Kvm.open();
    const vm = kvm.createVm();
    try {
      assert.equal(report.kvm.apiVersion, kvm.apiVersion);
      const names = report.kvm.capabilities.map((c) => c.name);
      for (const name of ['KVM_CAP_USER_MEMORY2', 'KVM_CAP_MEMORY_FAULT_INFO', 'KVM_CAP_GUEST_MEMFD', 'KVM_CAP_VM_TYPES', 'KVM_CAP_GUEST_MEMFD_FLAGS'] as const) {
        assert.ok(names.includes(name), `${name} is reported`);
      }
      for (const c of report.kvm.capabilities) {
        assert.equal(c.number, KvmCap[c.name]);
        assert.equal(c.value, c.askedOn === 'vm' ? vm.checkExtension(c.name) : kvm.checkExtension(c.name), c.name);
        assert.equal(c.status, c.value > 0 ? 'ok' : 'missing', c.name);
      }
    } finally {
      vm.close();
      kvm.close();
    }
  });

  test('the userfault capabilities of seeds 002/003 are reported as not merged, never probed', () => {
    const names = report.kvm.unmerged.map((u) => u.name);
    assert.ok(names.includes('KVM_CAP_USERFAULT_ON_MISSING'));
    assert.ok(names.includes('KVM_CAP_MEM_FAULT_NOWAIT'));
    for (const u of report.kvm.unmerged) {
      assert.equal(u.status, 'skipped');
      assert.match(u.detail, /not in this kernel's uapi \(not merged upstream\)/);
      assert.ok(!('value' in u), `${u.name} has no value: it was not asked`);
    }
  });

  test('Kvm and Vm: close twice is safe, use after close throws ClosedError', () => {
    const kvm = Kvm.open();
    const vm = kvm.createVm();
    vm.close();
    vm.close();
    assert.throws(() => vm.checkExtension('KVM_CAP_USER_MEMORY2'), ClosedError);
    assert.throws(() => vm.createGuestMemfd(4096), ClosedError);
    kvm.close();
    kvm.close();
    assert.throws(() => kvm.createVm(), ClosedError);
    assert.throws(() => kvm.checkExtension('KVM_CAP_USER_MEMORY2'), ClosedError);
  });

  test('createGuestMemfd refuses flags the VM does not accept, by name', (t) => {
    const kvm = Kvm.open();
    const vm = kvm.createVm();
    try {
      const supported = vm.checkExtension('KVM_CAP_GUEST_MEMFD');
      if (supported === 0) return t.skip('no guest_memfd in this KVM');
      const bogus = 1 << 30; // no such GUEST_MEMFD_FLAG_*
      assert.throws(() => vm.createGuestMemfd(4096, GUEST_MEMFD_MAPPABLE | bogus), /does not accept flag|EINVAL/);
      const flags = vm.checkExtension('KVM_CAP_GUEST_MEMFD_FLAGS');
      if ((flags & GuestMemfdFlag.GUEST_MEMFD_FLAG_MMAP) === 0) return;
      const b = Backing.create('guest_memfd', 8192, { createGuestMemfd: vm.guestMemfdFactory() });
      try {
        const bytes = b.primary.bytes();
        bytes[4096] = 0xab;
        assert.equal(b.alias!.bytes()[4096], 0xab, 'both mappings show the same guest_memfd page');
      } finally {
        b.close();
      }
    } finally {
      vm.close();
      kvm.close();
    }
  });
});

describe('hugepages', () => {
  test('both pools are reported with counts; an empty one carries the remedy', () => {
    const sizes = report.hugepages.pools.map((p) => p.pageSize);
    assert.deepEqual(sizes, [2 * 2 ** 20, 2 ** 30]);
    for (const p of report.hugepages.pools) {
      if (!p.exists) continue;
      assert.equal(p.available, p.free - p.reserved);
      if (p.available === 0) assert.match(p.remedy ?? '', /nr_hugepages/);
    }
  });
});
