import { native } from '../native/binding.js';
import { KvmIoctl, StructSize } from './constants.js';

/**
 * KVM_CREATE_GUEST_MEMFD on a VM fd: a guest_memfd of `size` bytes with GUEST_MEMFD_FLAG_*
 * `flags`. The caller owns the returned fd; it keeps the VM alive until closed.
 */
export function createGuestMemfd(vmFd: number, size: number, flags: number): number {
  // struct kvm_create_guest_memfd { __u64 size; __u64 flags; __u64 reserved[6]; }:
  // reserved must be zero, which a fresh buffer is.
  const arg = new Uint8Array(StructSize.kvm_create_guest_memfd);
  const view = new DataView(arg.buffer);
  view.setBigUint64(0, BigInt(size), true);
  view.setBigUint64(8, BigInt(flags), true);
  return native.ioctl(vmFd, KvmIoctl.KVM_CREATE_GUEST_MEMFD, arg, 'KVM_CREATE_GUEST_MEMFD');
}
