import { closeSync, constants as fsc, existsSync, openSync, readFileSync, readSync } from 'node:fs';
import { ClosedError, PermissionError, UnsupportedError } from '../errors.js';
import { native } from '../native/binding.js';
import { isSystemError } from '../native/errors.js';
import { KvmIoctl, KVM_API_VERSION, type KvmCapName, VmType } from './constants.js';
import { Vm, capNumber } from './vm.js';
import { type CpuidEntry, cpuidBuffer, unpackCpuid } from './x86/cpuid.js';

export const KVM_DEVICE = '/dev/kvm';

const O_RDWR = 0o2;
const O_CLOEXEC = 0o2000000;

/** What to do when /dev/kvm is not there, when nothing more is known about the machine. */
export const KVM_MISSING_REMEDY =
  'Load the KVM module for this CPU (`modprobe kvm_intel` or `modprobe kvm_amd`) and enable virtualization ' +
  '(VT-x/AMD-V) in the firmware; in a cloud VM, enable nested virtualization';

/** What works without KVM, said after every "KVM cannot be had" remedy. */
export const WITHOUT_KVM = '`postcopy bench --vcpu-threads` runs the same experiment on plain threads, and everything that needs no vCPU works';

/** The kernel log's lines about KVM, read from /dev/kmsg without blocking (empty when it is not readable). */
export function kvmLogLines(): string[] {
  let fd: number;
  try {
    fd = openSync('/dev/kmsg', fsc.O_RDONLY | fsc.O_NONBLOCK);
  } catch {
    return [];
  }
  const lines: string[] = [];
  const buf = Buffer.alloc(8192);
  try {
    for (let i = 0; i < 100_000; i++) {
      let n: number;
      try {
        n = readSync(fd, buf, 0, buf.length, null);
      } catch (e) {
        // EPIPE: a record was overwritten while reading; go on. EAGAIN: the end.
        if ((e as NodeJS.ErrnoException).code === 'EPIPE') continue;
        break;
      }
      if (n <= 0) break;
      const record = buf.toString('utf8', 0, n);
      const text = record.slice(record.indexOf(';') + 1).split('\n')[0]!;
      if (/kvm/i.test(text) && !/kvm-clock/i.test(text)) lines.push(text.trim());
    }
  } finally {
    closeSync(fd);
  }
  return lines;
}

function cpuFlags(): Set<string> {
  try {
    return new Set(/^flags\s*:\s*(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1]?.split(/\s+/) ?? []);
  } catch {
    return new Set();
  }
}

/**
 * Why there is no /dev/kvm on this machine and what can help, from the modules present, the
 * CPU's flags and (where readable) the kernel log. Never a remedy that cannot help: a kernel
 * that is itself a kvm-pvm guest cannot have KVM, whatever is loaded.
 */
export function kvmMissingRemedy(): string {
  const modules = ['kvm', 'kvm_intel', 'kvm_amd', 'kvm_pvm'].filter((m) => existsSync(`/sys/module/${m}`));
  const log = kvmLogLines();
  const pvmGuest = log.find((l) => /itself a kvm-pvm guest/.test(l));
  if (pvmGuest) {
    return `KVM cannot be had on this machine: its kernel is itself a kvm-pvm guest, so kvm_pvm does not bind (kernel log: "${pvmGuest}") ` +
      `and no module, group or permission can make ${KVM_DEVICE}; ${WITHOUT_KVM}`;
  }
  const flags = cpuFlags();
  const driver = flags.has('vmx') ? 'kvm_intel' : flags.has('svm') ? 'kvm_amd' : undefined;
  if (modules.includes('kvm_pvm') || (modules.includes('kvm') && driver && modules.includes(driver))) {
    const bound = modules.filter((m) => m !== 'kvm').join(', ');
    const why = log.length ? ` (kernel log: "${log[log.length - 1]}")` : ' (the kernel log is not readable here: see `dmesg | grep -i kvm` as root)';
    return `The KVM modules are loaded (kvm, ${bound}) but made no ${KVM_DEVICE}${why}: loading modules again cannot help; ` +
      `with kvm_pvm the host must offer PVM, with kvm_intel/kvm_amd virtualization must be enabled in the firmware or the hypervisor; ${WITHOUT_KVM}`;
  }
  if (driver) return `Load the KVM module for this CPU (\`modprobe ${driver}\`) and enable virtualization in the firmware; ${WITHOUT_KVM}`;
  return `This CPU shows no vmx/svm: enable nested virtualization in the hypervisor that runs this machine (or use kvm_pvm where the host offers PVM); ${WITHOUT_KVM}`;
}

/** What to do when /dev/kvm exists but has no driver behind it (ENXIO/ENODEV). */
export function kvmNoDriverRemedy(): string {
  return `${KVM_DEVICE} exists but no KVM driver answers behind it. ${kvmMissingRemedy()}`;
}

/** What to do when /dev/kvm is there but this user may not open it. */
export const KVM_PERMISSION_REMEDY =
  'Run as root, or add the user to the kvm group (`sudo usermod -aG kvm $USER`, then log in again)';

/**
 * An environment variable that makes this process behave as a machine without KVM: the
 * no-KVM paths (the threads guest, bench --vcpu-threads, the skips) are then exercised on
 * machines that have /dev/kvm too (CI runs the suite a second time so).
 */
export const HIDE_KVM_ENV = 'POSTCOPY_NO_KVM';
export function kvmHidden(): boolean {
  return process.env[HIDE_KVM_ENV] === '1';
}

/**
 * The KVM system fd (/dev/kvm): the capabilities of this host's KVM, and the factory of VMs.
 */
export class Kvm {
  readonly fd: number;
  /** KVM_GET_API_VERSION; always 12 on any kernel this opens on. */
  readonly apiVersion: number;
  readonly path: string;
  #closed = false;
  #vcpuMmapSize: number | undefined;
  #supportedCpuid: CpuidEntry[] | undefined;

  private constructor(fd: number, apiVersion: number, path: string) {
    this.fd = fd;
    this.apiVersion = apiVersion;
    this.path = path;
  }

  /** Opens /dev/kvm. Throws UnsupportedError or PermissionError, with the remedy, when it cannot. */
  static open(path: string = KVM_DEVICE): Kvm {
    if (kvmHidden()) {
      throw new UnsupportedError(`${path}: hidden by ${HIDE_KVM_ENV}=1 (this process behaves as a machine without KVM)`, `Unset ${HIDE_KVM_ENV} to use KVM`);
    }
    let fd: number;
    try {
      fd = native.open(path, O_RDWR | O_CLOEXEC, 0);
    } catch (e) {
      // ENOENT: no device node (module not loaded, or no KVM in this kernel); ENXIO/ENODEV:
      // a node without a driver behind it (module unloaded, virtualization disabled).
      if (isSystemError(e, 'ENOENT')) {
        throw new UnsupportedError(`${path} does not exist: KVM is not available on this machine`, kvmMissingRemedy());
      }
      if (isSystemError(e, 'ENXIO', 'ENODEV')) {
        throw new UnsupportedError(`${path} exists but has no KVM driver behind it (${(e as Error).message})`, kvmNoDriverRemedy());
      }
      if (isSystemError(e, 'EACCES', 'EPERM')) {
        throw new PermissionError(`${path}: permission denied`, KVM_PERMISSION_REMEDY);
      }
      throw e;
    }
    try {
      const apiVersion = native.ioctl(fd, KvmIoctl.KVM_GET_API_VERSION, 0, 'KVM_GET_API_VERSION');
      if (apiVersion !== KVM_API_VERSION) {
        throw new UnsupportedError(
          `${path}: KVM API version ${apiVersion}, expected ${KVM_API_VERSION}`,
          'This KVM speaks an ABI postcopy does not know; use a mainline Linux kernel',
        );
      }
      return new Kvm(fd, apiVersion, path);
    } catch (e) {
      native.close(fd);
      throw e;
    }
  }

  get closed(): boolean {
    return this.#closed;
  }

  #check(op: string): void {
    if (this.#closed) throw new ClosedError(this.path, op);
  }

  /** KVM_CHECK_EXTENSION on /dev/kvm: 0 when absent, else a capability-specific positive value. */
  checkExtension(cap: KvmCapName | number): number {
    this.#check('checkExtension');
    return native.ioctl(this.fd, KvmIoctl.KVM_CHECK_EXTENSION, capNumber(cap), 'KVM_CHECK_EXTENSION');
  }

  /** KVM_GET_VCPU_MMAP_SIZE: the bytes of each vCPU's kvm_run mapping (and the pages after it). */
  vcpuMmapSize(): number {
    this.#check('vcpuMmapSize');
    this.#vcpuMmapSize ??= native.ioctl(this.fd, KvmIoctl.KVM_GET_VCPU_MMAP_SIZE, 0, 'KVM_GET_VCPU_MMAP_SIZE');
    return this.#vcpuMmapSize;
  }

  /**
   * KVM_GET_SUPPORTED_CPUID: every CPUID leaf this KVM can expose to a guest. Given to each
   * vCPU with KVM_SET_CPUID2 (as the selftests do), it is what lets the guest use long mode
   * and physical addresses beyond 36 bits.
   */
  supportedCpuid(): CpuidEntry[] {
    this.#check('supportedCpuid');
    if (!this.#supportedCpuid) {
      const buf = cpuidBuffer();
      native.ioctl(this.fd, KvmIoctl.KVM_GET_SUPPORTED_CPUID, buf, 'KVM_GET_SUPPORTED_CPUID');
      this.#supportedCpuid = unpackCpuid(buf);
    }
    return this.#supportedCpuid.map((e) => ({ ...e }));
  }

  /** KVM_CREATE_VM of machine `type` (VmType; default KVM_X86_DEFAULT_VM). */
  createVm(type: number = VmType.KVM_X86_DEFAULT_VM): Vm {
    this.#check('createVm');
    const mmapSize = this.vcpuMmapSize();
    for (let attempt = 0; ; attempt++) {
      try {
        return new Vm(native.ioctl(this.fd, KvmIoctl.KVM_CREATE_VM, type, 'KVM_CREATE_VM'), type, mmapSize);
      } catch (e) {
        // KVM_CREATE_VM can answer EINTR when a signal arrives while it sets the VM up;
        // QEMU retries it the same way.
        if (isSystemError(e, 'EINTR') && attempt < 10) continue;
        throw e;
      }
    }
  }

  /** Closes /dev/kvm; VMs already created live on. Safe twice. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    native.close(this.fd);
  }
}
