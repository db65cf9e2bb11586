import { existsSync } from 'node:fs';
import { KvmCap, type KvmCapName, GuestMemfdFlag, flagNames, vmTypeNames } from '../kvm/constants.js';
import { KVM_DEVICE, Kvm, kvmMissingRemedy } from '../kvm/system.js';
import type { Vm } from '../kvm/vm.js';
import { formatSize, hex } from '../util/format.js';
import { type Finding, failed, missing, ok, skipped } from './finding.js';

export interface CapabilityFinding extends Finding {
  readonly name: KvmCapName;
  readonly number: number;
  /** KVM_CHECK_EXTENSION's answer: 0 absent, else capability-specific (a mask, a size, 1). */
  readonly value: number;
  /** Asked on a VM when KVM allows that (answers can depend on the VM type), else on /dev/kvm. */
  readonly askedOn: 'vm' | 'system';
  /** What it is for, in a few words. */
  readonly purpose: string;
}

/** A capability from a patch series that is not in mainline: reported, never probed. */
export interface UnmergedCapability extends Finding {
  readonly name: string;
  /** The series and the seed document that describes it. */
  readonly series: string;
}

export interface KvmReport {
  /** /dev/kvm present and openable, with its API version. */
  readonly device: Finding;
  readonly apiVersion: number | null;
  /** KVM_CREATE_VM of the default type. */
  readonly vm: Finding;
  readonly capabilities: CapabilityFinding[];
  readonly unmerged: UnmergedCapability[];
}

interface CapSpec {
  readonly name: KvmCapName;
  readonly purpose: string;
  readonly remedy: string;
  readonly describe?: (value: number) => string;
}

const NEWER = 'Use a newer kernel';

/** The capabilities postcopy's layers depend on, in report order. */
const CAPS: readonly CapSpec[] = [
  { name: 'KVM_CAP_USER_MEMORY2', purpose: 'KVM_SET_USER_MEMORY_REGION2', remedy: `${NEWER} (KVM_SET_USER_MEMORY_REGION2 appeared in Linux 6.8)` },
  { name: 'KVM_CAP_MEMORY_FAULT_INFO', purpose: 'memory fault exits say where', remedy: `${NEWER} (Linux 6.8+); faults are still served through userfaultfd without it` },
  { name: 'KVM_CAP_GUEST_MEMFD', purpose: 'KVM_CREATE_GUEST_MEMFD', remedy: `${NEWER} built with CONFIG_KVM_GUEST_MEMFD; use shmem meanwhile` },
  {
    name: 'KVM_CAP_VM_TYPES',
    purpose: 'VM types',
    remedy: `${NEWER}; only the default VM type is available`,
    describe: (v) => `${hex(v)}: ${vmTypeNames(v).join(' ')}`,
  },
  {
    name: 'KVM_CAP_GUEST_MEMFD_FLAGS',
    purpose: 'guest_memfd flags',
    remedy: `${NEWER} whose guest_memfd can be mmap'ed (GUEST_MEMFD_FLAG_MMAP); use shmem meanwhile`,
    describe: (v) => `${hex(v)}: ${flagNames(GuestMemfdFlag, v).join(' ')}`,
  },
  {
    name: 'KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2',
    purpose: 'dirty log, manual clear',
    remedy: `${NEWER}; migration falls back to KVM_GET_DIRTY_LOG alone`,
    describe: (v) => `${hex(v)}`,
  },
  {
    name: 'KVM_CAP_DIRTY_LOG_RING',
    purpose: 'dirty ring',
    remedy: `${NEWER}; migration uses the dirty bitmap instead`,
    describe: (v) => `up to ${formatSize(v)}`,
  },
  {
    name: 'KVM_CAP_DIRTY_LOG_RING_ACQ_REL',
    purpose: 'dirty ring, acquire/release',
    remedy: `${NEWER}; migration uses the dirty bitmap instead`,
    describe: (v) => `up to ${formatSize(v)}`,
  },
];

/**
 * Capabilities of the userfault series (seeds 002 and 003, and the 2025 KVM Userfault
 * series). They are not in mainline, so they have no stable KVM_CAP_* number: each
 * revision took the next free number of its day, and mainline has since given those
 * numbers to other capabilities (236, asked by KVM_CAP_EXIT_ON_MISSING in 2024, is now
 * KVM_CAP_PRE_FAULT_MEMORY). Asking KVM_CHECK_EXTENSION about a guessed number would
 * report some other capability, so the probe reports them without asking.
 */
const UNMERGED: readonly { name: string; series: string }[] = [
  { name: 'KVM_CAP_MEM_FAULT_NOWAIT', series: 'seed 002 (2023): vCPUs exit instead of sleeping in userfaultfd' },
  { name: 'KVM_CAP_USERFAULT_ON_MISSING', series: 'seed 003, annotated memory faults v5 (2023); later KVM_CAP_EXIT_ON_MISSING' },
  { name: 'KVM_CAP_USERFAULT', series: '"KVM: Introduce KVM Userfault" (2025): the KVM_MEM_USERFAULT memslot flag' },
];

const UNMERGED_REMEDY =
  'Nothing to do: postcopy serves guest faults through userfaultfd alone; using this needs a kernel carrying its series';

function unmerged(): UnmergedCapability[] {
  return UNMERGED.map((u) => ({ ...u, ...skipped("not in this kernel's uapi (not merged upstream)", UNMERGED_REMEDY) }));
}

function notTried(device: Finding, why: string): KvmReport {
  const reason = skipped(`not tried: ${why}`, device.remedy ?? kvmMissingRemedy());
  return { device, apiVersion: null, vm: reason, capabilities: [], unmerged: unmerged() };
}

function askCapability(spec: CapSpec, kvm: Kvm, vm: Vm | undefined): CapabilityFinding {
  const number = KvmCap[spec.name];
  const askedOn = vm ? 'vm' : 'system';
  const base = { name: spec.name, number, askedOn, purpose: spec.purpose } as const;
  try {
    const value = vm ? vm.checkExtension(number) : kvm.checkExtension(number);
    const described = spec.describe ? spec.describe(value) : String(value);
    return { ...base, value, ...(value > 0 ? ok(described) : missing(`not supported (${described})`, spec.remedy)) };
  } catch (e) {
    return { ...base, value: 0, ...failed(e, spec.remedy) };
  }
}

/** The probe's KVM session: its report, and the VM (if any) that other probes may use. Close it after. */
export interface KvmProbe {
  readonly report: KvmReport;
  /** The VM for guest_memfd tries, or why there is none. */
  readonly vm: Vm | Finding;
  close(): void;
}

export function probeKvm(): KvmProbe {
  if (!existsSync(KVM_DEVICE)) {
    const device = missing(`${KVM_DEVICE} does not exist`, kvmMissingRemedy());
    return { report: notTried(device, `no ${KVM_DEVICE}`), vm: device, close: () => {} };
  }
  let kvm: Kvm;
  try {
    kvm = Kvm.open();
  } catch (e) {
    const device = failed(e, kvmMissingRemedy());
    return { report: notTried(device, `${KVM_DEVICE} did not open`), vm: device, close: () => {} };
  }
  const device = ok(`opened, API version ${kvm.apiVersion}`);
  let vm: Vm | undefined;
  let vmFinding: Finding;
  try {
    vm = kvm.createVm();
    vmFinding = ok('created (default type)');
  } catch (e) {
    vmFinding = failed(e, 'KVM is present but refuses to create a VM: check `dmesg` for why (e.g. virtualization disabled in firmware)');
  }
  // VMs answer KVM_CHECK_EXTENSION for themselves only with KVM_CAP_CHECK_EXTENSION_VM.
  const askVm = vm !== undefined && kvm.checkExtension(KvmCap.KVM_CAP_CHECK_EXTENSION_VM) > 0 ? vm : undefined;
  const capabilities = CAPS.map((spec) => askCapability(spec, kvm, askVm));
  return {
    report: { device, apiVersion: kvm.apiVersion, vm: vmFinding, capabilities, unmerged: unmerged() },
    vm: vm ?? vmFinding,
    close: () => {
      vm?.close();
      kvm.close();
    },
  };
}
