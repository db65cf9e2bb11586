import { existsSync, readFileSync } from 'node:fs';

/**
 * What kind of KVM this is, for information only: nothing is decided from it. Users'
 * machines have VMX or SVM; a nested, page-table based KVM (kvm_pvm) shows neither, and
 * runs only small, plain guests.
 */
export interface CpuReport {
  /** Hardware virtualization flags in /proc/cpuinfo. */
  readonly virtualization: ('vmx' | 'svm')[];
  /** The CPU says it runs under a hypervisor: this KVM is nested. */
  readonly hypervisor: boolean;
  /** KVM modules loaded (/sys/module). */
  readonly kvmModules: string[];
  /** kvm_intel/kvm_amd `nested` parameter, when there is one. */
  readonly nested: string | null;
  readonly note: string;
}

const MODULES = ['kvm', 'kvm_intel', 'kvm_amd', 'kvm_pvm'];

function cpuFlags(): Set<string> {
  try {
    const m = /^flags\s*:\s*(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'));
    return new Set(m?.[1]?.split(/\s+/) ?? []);
  } catch {
    return new Set();
  }
}

function read(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch {
    return undefined;
  }
}

export function probeCpu(): CpuReport {
  const flags = cpuFlags();
  const virtualization = (['vmx', 'svm'] as const).filter((f) => flags.has(f));
  const hypervisor = flags.has('hypervisor');
  const kvmModules = MODULES.filter((m) => existsSync(`/sys/module/${m}`));
  const nested = read('/sys/module/kvm_intel/parameters/nested') ?? read('/sys/module/kvm_amd/parameters/nested') ?? null;
  let note: string;
  if (kvmModules.length > 0 && !existsSync('/dev/kvm')) {
    note = `KVM modules present (${kvmModules.join(', ')}) but no /dev/kvm: they did not bind (see kvm above for why and what still works)`;
  } else if (virtualization.length > 0) note = `hardware-assisted KVM (${virtualization.join(', ')})${hypervisor ? ', nested' : ''}`;
  else if (kvmModules.length > 0) {
    note = `no vmx/svm visible: page-table based KVM${kvmModules.includes('kvm_pvm') ? ' (kvm_pvm)' : ''}; small plain guests run, full OS guests may not`;
  } else note = 'no vmx/svm visible and no KVM module loaded';
  return { virtualization, hypervisor, kvmModules, nested, note };
}
