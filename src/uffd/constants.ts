/**
 * userfaultfd's ABI, from include/uapi/linux/userfaultfd.h of Linux 6.18. Defined here,
 * not read from the build machine's headers, which are older than the kernels we run on.
 */

export const UFFD_API = 0xaa;

/** Flags of userfaultfd(2) and USERFAULTFD_IOC_NEW. */
export const OpenFlag = {
  USER_MODE_ONLY: 1,
  NONBLOCK: 0o4000,
  CLOEXEC: 0o2000000,
} as const;

/** UFFD_FEATURE_* bits, negotiated with UFFDIO_API. */
export const Feature = {
  PAGEFAULT_FLAG_WP: 1n << 0n,
  EVENT_FORK: 1n << 1n,
  EVENT_REMAP: 1n << 2n,
  EVENT_REMOVE: 1n << 3n,
  MISSING_HUGETLBFS: 1n << 4n,
  MISSING_SHMEM: 1n << 5n,
  EVENT_UNMAP: 1n << 6n,
  SIGBUS: 1n << 7n,
  THREAD_ID: 1n << 8n,
  MINOR_HUGETLBFS: 1n << 9n,
  MINOR_SHMEM: 1n << 10n,
  EXACT_ADDRESS: 1n << 11n,
  WP_HUGETLBFS_SHMEM: 1n << 12n,
  WP_UNPOPULATED: 1n << 13n,
  POISON: 1n << 14n,
  WP_ASYNC: 1n << 15n,
  MOVE: 1n << 16n,
} as const;
export type FeatureName = keyof typeof Feature;

/** Bits of the `ioctls` masks returned by UFFDIO_API and UFFDIO_REGISTER. */
export const IoctlBit = {
  REGISTER: 0n,
  UNREGISTER: 1n,
  WAKE: 2n,
  COPY: 3n,
  ZEROPAGE: 4n,
  MOVE: 5n,
  WRITEPROTECT: 6n,
  CONTINUE: 7n,
  POISON: 8n,
  API: 0x3fn,
} as const;
export type IoctlName = keyof typeof IoctlBit;

/** UFFDIO_REGISTER_MODE_*; combine with |. */
export const RegisterMode = {
  MISSING: 1,
  WP: 2,
  MINOR: 4,
} as const;
export type RegisterModeName = keyof typeof RegisterMode;

export const CopyMode = { DONTWAKE: 1, WP: 2 } as const;
export const ZeropageMode = { DONTWAKE: 1 } as const;
export const WriteProtectMode = { WP: 1, DONTWAKE: 2 } as const;
export const ContinueMode = { DONTWAKE: 1, WP: 2 } as const;
export const PoisonMode = { DONTWAKE: 1 } as const;
export const MoveMode = { DONTWAKE: 1, ALLOW_SRC_HOLES: 2 } as const;

/** uffd_msg.event */
export const EventCode = {
  PAGEFAULT: 0x12,
  FORK: 0x13,
  REMAP: 0x14,
  REMOVE: 0x15,
  UNMAP: 0x16,
} as const;

/** uffd_msg.arg.pagefault.flags */
export const PagefaultFlag = {
  WRITE: 1n << 0n,
  WP: 1n << 1n,
  MINOR: 1n << 2n,
} as const;

/** sizeof(struct uffd_msg) */
export const MESSAGE_SIZE = 32;

/** Names of the bits set in `mask`, in bit order. */
export function namesOf<K extends string>(table: Record<K, bigint>, mask: bigint): K[] {
  return (Object.keys(table) as K[]).filter((k) => (mask & table[k]) !== 0n);
}

/** Names of the ioctls whose bits are set in an `ioctls` mask. */
export function ioctlNames(mask: bigint): IoctlName[] {
  return (Object.keys(IoctlBit) as IoctlName[]).filter((k) => (mask >> IoctlBit[k]) & 1n);
}
