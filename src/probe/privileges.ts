import { accessSync, existsSync, constants as fs, readFileSync } from 'node:fs';
import { KVM_DEVICE, KVM_PERMISSION_REMEDY, kvmMissingRemedy } from '../kvm/system.js';
import { reserveRemedy } from '../memory/hugepages.js';
import { MiB } from '../memory/constants.js';
import { type Finding, missing, ok } from './finding.js';
import { PERMISSION_REMEDY, type UserfaultfdReport } from './userfaultfd.js';

/** The capabilities (capabilities(7)) that matter here, by bit number. */
const CAPABILITY_BITS = {
  /** userfaultfd(2) for kernel-mode faults while vm.unprivileged_userfaultfd is 0. */
  CAP_SYS_PTRACE: 19,
  /** sysctl writes, and the hugepage pools. */
  CAP_SYS_ADMIN: 21,
} as const;
type CapabilityName = keyof typeof CAPABILITY_BITS;

export interface PrivilegesReport {
  readonly uid: number;
  readonly euid: number;
  readonly root: boolean;
  /** Effective capabilities of this process (CapEff in /proc/self/status). */
  readonly capabilities: Readonly<Record<CapabilityName, boolean>>;
  /** On what grounds this process may use userfaultfd for KVM's faults. */
  readonly userfaultfd: Finding;
  /** Read-write access to /dev/kvm. */
  readonly kvm: Finding;
  /** Whether this process may grow the hugepage pools (needed only to reserve pages). */
  readonly hugepagePools: Finding;
}

function effectiveCapabilities(): bigint {
  try {
    const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(readFileSync('/proc/self/status', 'utf8'));
    return m ? BigInt(`0x${m[1]}`) : 0n;
  } catch {
    return 0n;
  }
}

function canAccess(path: string, mode: number): boolean {
  try {
    accessSync(path, mode);
    return true;
  } catch {
    return false;
  }
}

function userfaultfdGrounds(uffd: UserfaultfdReport, ptrace: boolean): Finding {
  if (uffd.device.status === 'ok') return ok('/dev/userfaultfd opens, so CAP_SYS_PTRACE is not needed');
  if (uffd.syscall.status === 'ok') {
    if (ptrace) return ok('CAP_SYS_PTRACE allows userfaultfd(2)');
    if (uffd.unprivilegedSysctl === 1) return ok('vm.unprivileged_userfaultfd=1 allows userfaultfd(2)');
    return ok('userfaultfd(2) opens');
  }
  return missing('neither CAP_SYS_PTRACE, nor /dev/userfaultfd access, nor vm.unprivileged_userfaultfd=1', uffd.usable.remedy ?? PERMISSION_REMEDY);
}

export function probePrivileges(uffd: UserfaultfdReport): PrivilegesReport {
  const uid = process.getuid?.() ?? -1;
  const euid = process.geteuid?.() ?? -1;
  const eff = effectiveCapabilities();
  const capabilities = Object.fromEntries(
    Object.entries(CAPABILITY_BITS).map(([name, bit]) => [name, ((eff >> BigInt(bit)) & 1n) === 1n]),
  ) as Record<CapabilityName, boolean>;
  const rw = fs.R_OK | fs.W_OK;
  const poolFile = '/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages';
  return {
    uid,
    euid,
    root: euid === 0,
    capabilities,
    userfaultfd: userfaultfdGrounds(uffd, capabilities.CAP_SYS_PTRACE),
    kvm: !existsSync(KVM_DEVICE)
      ? missing(`${KVM_DEVICE} does not exist (no permission would help)`, kvmMissingRemedy())
      : canAccess(KVM_DEVICE, rw)
        ? ok('readable and writable')
        : missing(`no read-write access to ${KVM_DEVICE}`, KVM_PERMISSION_REMEDY),
    hugepagePools: canAccess(poolFile, fs.W_OK)
      ? ok('may grow the hugepage pools')
      : missing('may not grow the hugepage pools', `Needed only to reserve pages (--reserve-hugepages). ${reserveRemedy(2 * MiB, 512)}`),
  };
}
