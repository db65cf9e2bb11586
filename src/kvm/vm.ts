import { ClosedError, InvalidArgumentError, UnsupportedError } from '../errors.js';
import { native } from '../native/binding.js';
import { isSystemError } from '../native/errors.js';
import { KvmCap, type KvmCapName, GuestMemfdFlag, KvmIoctl, flagNames } from './constants.js';
import { createGuestMemfd } from './guest-memfd.js';

const PAGE = 4096;

/** The flags a guest_memfd needs to stand in for shmem: mappable by the host, pages shared from the start. */
export const GUEST_MEMFD_MAPPABLE = GuestMemfdFlag.GUEST_MEMFD_FLAG_MMAP | GuestMemfdFlag.GUEST_MEMFD_FLAG_INIT_SHARED;

export function capNumber(cap: KvmCapName | number): number {
  return typeof cap === 'number' ? cap : KvmCap[cap];
}

/**
 * A KVM VM: the fd KVM_CREATE_VM returned. It owns nothing but that fd; memory slots and
 * vCPUs are added by the layers that need them.
 */
export class Vm {
  readonly fd: number;
  /** The machine type it was created with (VmType). */
  readonly type: number;
  #closed = false;

  /** Use Kvm.createVm(). */
  constructor(fd: number, type: number) {
    this.fd = fd;
    this.type = type;
  }

  get closed(): boolean {
    return this.#closed;
  }

  #check(op: string): void {
    if (this.#closed) throw new ClosedError(`VM fd ${this.fd}`, op);
  }

  /**
   * KVM_CHECK_EXTENSION on this VM: what this VM (of this type) supports, which can differ
   * from the answer on /dev/kvm (e.g. KVM_CAP_GUEST_MEMFD_FLAGS). Needs KVM_CAP_CHECK_EXTENSION_VM.
   */
  checkExtension(cap: KvmCapName | number): number {
    this.#check('checkExtension');
    return native.ioctl(this.fd, KvmIoctl.KVM_CHECK_EXTENSION, capNumber(cap), 'KVM_CHECK_EXTENSION');
  }

  /**
   * KVM_CREATE_GUEST_MEMFD: a guest_memfd of `size` bytes bound to this VM. The default flags
   * make it mappable by the host (what a Backing needs). The caller owns the fd.
   */
  createGuestMemfd(size: number, flags: number = GUEST_MEMFD_MAPPABLE): number {
    this.#check('createGuestMemfd');
    if (!Number.isSafeInteger(size) || size <= 0 || size % PAGE !== 0) {
      throw new InvalidArgumentError(`KVM_CREATE_GUEST_MEMFD: size ${size} is not a positive multiple of ${PAGE}`);
    }
    try {
      return createGuestMemfd(this.fd, size, flags);
    } catch (e) {
      // EINVAL covers both bad flags and a bad size; tell them apart by asking what this VM accepts.
      if (isSystemError(e, 'EINVAL')) {
        const supported = this.#supportedGuestMemfdFlags();
        if (supported !== undefined && (flags & ~supported) !== 0) {
          throw new UnsupportedError(
            `KVM_CREATE_GUEST_MEMFD: this VM does not accept flag(s) ${flagNames(GuestMemfdFlag, flags & ~supported).join(', ')} ` +
              `(accepted: ${flagNames(GuestMemfdFlag, supported).join(', ') || 'none'})`,
            'Use a kernel whose KVM_CAP_GUEST_MEMFD_FLAGS includes them (see `postcopy probe`), or another backing source',
          );
        }
      }
      throw e;
    }
  }

  #supportedGuestMemfdFlags(): number | undefined {
    try {
      return this.checkExtension(KvmCap.KVM_CAP_GUEST_MEMFD_FLAGS);
    } catch {
      return undefined;
    }
  }

  /** A function for BackingOptions.createGuestMemfd: guest_memfds of this VM with `flags`. */
  guestMemfdFactory(flags: number = GUEST_MEMFD_MAPPABLE): (size: number) => number {
    return (size) => this.createGuestMemfd(size, flags);
  }

  /** Closes the VM fd. guest_memfds created from it keep the VM alive until they close. Safe twice. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    native.close(this.fd);
  }
}
