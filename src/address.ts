/**
 * Two address spaces meet in this project and must never be mixed up (as in rust-vmm's
 * vm-memory): a guest-physical address is what the guest sees, a host-virtual address is
 * where that memory is mapped in this process. Both are plain numbers at run time
 * (user-space addresses stay below 2^47, exact in a double); the brands exist only for
 * the type checker.
 */
export type HostAddress = number & { readonly __space: 'host-virtual' };
export type GuestAddress = number & { readonly __space: 'guest-physical' };

/** Brands a number as a host-virtual address. */
export function hva(n: number): HostAddress {
  return n as HostAddress;
}

/** Brands a number as a guest-physical address. */
export function gpa(n: number): GuestAddress {
  return n as GuestAddress;
}
