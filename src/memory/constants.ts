/** mmap, madvise, memfd and fallocate constants for x86_64 Linux. */
export const Prot = { NONE: 0, READ: 1, WRITE: 2, EXEC: 4 } as const;
export const MapFlag = {
  SHARED: 0x01,
  PRIVATE: 0x02,
  FIXED: 0x10,
  ANONYMOUS: 0x20,
  NORESERVE: 0x4000,
  POPULATE: 0x8000,
  HUGETLB: 0x40000,
  FIXED_NOREPLACE: 0x100000,
} as const;
/** log2(page size) << 26, for MAP_HUGE_* and MFD_HUGE_*. */
export const HUGE_SHIFT = 26;
export const Madvise = { DONTNEED: 4, REMOVE: 9, HUGEPAGE: 14, NOHUGEPAGE: 15, POPULATE_READ: 22, POPULATE_WRITE: 23 } as const;
export const Mfd = { CLOEXEC: 1, ALLOW_SEALING: 2, HUGETLB: 4 } as const;
export const Mremap = { MAYMOVE: 1, FIXED: 2, DONTUNMAP: 4 } as const;
export const Falloc = { KEEP_SIZE: 1, PUNCH_HOLE: 2 } as const;

export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;

/** MAP_HUGE_2MB / MFD_HUGE_2MB style flag for a huge page size. */
export function hugeFlag(pageSize: number): number {
  return Math.log2(pageSize) << HUGE_SHIFT;
}
