/**
 * Which userfaultfd features a backing source and registration mode need: the one answer,
 * for everything that opens a userfaultfd for guest memory (bench, migrate, probe).
 */
import type { FeatureName, RegisterModeName } from '../uffd/constants.js';
import { oneOf } from '../native/args.js';
import { BACKING_INFO, BACKING_SOURCES, type BackingSourceInfo, type BackingSourceName } from './backing.js';

/**
 * The UFFD_FEATURE_* names to request (Userfaultfd.open's `features`) to register memory
 * of `source` in `mode`:
 * - MISSING: MISSING_HUGETLBFS on hugetlb, MISSING_SHMEM on other shared memory
 *   (shmem, guest_memfd), nothing on private anonymous memory;
 * - MINOR: MINOR_HUGETLBFS on hugetlb, MINOR_SHMEM on shared memory; none on private
 *   anonymous memory, which MINOR cannot register at all (no page cache: register() says so);
 * - WP: WP_HUGETLBFS_SHMEM on hugetlb and shared memory, nothing on private anonymous memory
 *   (PAGEFAULT_FLAG_WP is always granted where WP exists). Never WP_ASYNC: with it the
 *   kernel lets WP register on any memory, and faults are not delivered.
 * `extra` is added (e.g. ['THREAD_ID']), without repeats. Linux 6.18 grants these without
 * their being asked for; older kernels (and Userfaultfd.open's check) want them named.
 */
export function uffdFeaturesFor(
  source: BackingSourceName | Pick<BackingSourceInfo, 'shared' | 'hugetlb'>,
  mode: RegisterModeName,
  extra: readonly FeatureName[] = [],
): FeatureName[] {
  const info = typeof source === 'string' ? BACKING_INFO[oneOf('uffdFeaturesFor', 'source', source, BACKING_SOURCES)] : source;
  oneOf('uffdFeaturesFor', 'mode', mode, ['MISSING', 'MINOR', 'WP'] as const);
  const file = info.shared || info.hugetlb;
  let needed: FeatureName[];
  switch (mode) {
    case 'MISSING':
      needed = info.hugetlb ? ['MISSING_HUGETLBFS'] : file ? ['MISSING_SHMEM'] : [];
      break;
    case 'MINOR':
      needed = info.hugetlb ? ['MINOR_HUGETLBFS'] : file ? ['MINOR_SHMEM'] : [];
      break;
    case 'WP':
      needed = file ? ['WP_HUGETLBFS_SHMEM'] : [];
      break;
  }
  for (const f of extra) if (!needed.includes(f)) needed.push(f);
  return needed;
}
