import { BACKING_INFO, Backing, type BackingSourceInfo, type BackingSourceName } from '../memory/backing.js';
import { hugepagePool, reserveHugepages, reserveRemedy } from '../memory/hugepages.js';
import { isSystemError } from '../native/errors.js';
import type { FeatureName, IoctlName, RegisterModeName } from '../uffd/constants.js';
import { Userfaultfd } from '../uffd/userfaultfd.js';
import { formatSize } from '../util/format.js';
import { kvmMissingRemedy } from '../kvm/system.js';
import { Vm } from '../kvm/vm.js';
import { type Finding, failed, missing, ok, skipped } from './finding.js';
import { PERMISSION_REMEDY } from './userfaultfd.js';

/** The modes tried on every source, in the order reports show them. */
export const PROBED_MODES = ['MISSING', 'MINOR', 'WP'] as const satisfies readonly RegisterModeName[];
export type ProbedMode = (typeof PROBED_MODES)[number];

export interface RegistrationFinding extends Finding {
  /** The ioctls UFFDIO_REGISTER allows on the range (e.g. CONTINUE on a MINOR range). */
  readonly ioctls?: IoctlName[];
}

export interface BackingReport {
  readonly source: BackingSourceName;
  readonly description: string;
  /** The page the probe made and registered: one page of this source. */
  readonly pageSize: number;
  /** Whether one page of it could be made, or why that was not tried. */
  readonly create: Finding;
  /** UFFDIO_REGISTER of that page in each mode, each on a fresh userfaultfd. */
  readonly register: Readonly<Record<ProbedMode, RegistrationFinding>>;
}

export interface BackingProbeContext {
  /** Whether a userfaultfd that sees kernel faults can be opened at all (see probeUserfaultfd). */
  readonly uffd: Finding;
  /** A VM to create guest_memfds on, or why there is none. */
  readonly vm: Vm | Finding;
  /** Grow an empty hugetlb pool by one page for the try, and shrink it back after. */
  readonly reserveHugepages: boolean;
}

/**
 * What the seed 004 series ("KVM: guest_memfd: support for uffd minor") adds: without it,
 * UFFDIO_REGISTER refuses a guest_memfd mapping (EINVAL) in every mode.
 */
const GUEST_MEMFD_UNSUPPORTED = 'userfaultfd on guest_memfd is not supported by this kernel (the guest_memfd uffd minor series, seed 004, is not merged)';
const GUEST_MEMFD_REMEDY =
  'Use shmem or shared_hugetlb instead; userfaultfd on guest_memfd needs a kernel carrying "KVM: guest_memfd: support for uffd minor"';

/**
 * The UFFD_FEATURE_* bits a pager needs for `mode` on this kind of memory, requested on the
 * probe's descriptor as a pager would. Never WP_ASYNC: with it the kernel lets WP register on
 * any memory, which would report a WP that a pager cannot use.
 */
function featuresFor(info: BackingSourceInfo, mode: ProbedMode): FeatureName[] {
  const file = info.shared || info.hugetlb;
  switch (mode) {
    case 'MISSING':
      return info.hugetlb ? ['MISSING_HUGETLBFS'] : file ? ['MISSING_SHMEM'] : [];
    case 'MINOR':
      return info.hugetlb ? ['MINOR_HUGETLBFS'] : file ? ['MINOR_SHMEM'] : [];
    case 'WP':
      return file ? ['WP_HUGETLBFS_SHMEM'] : [];
  }
}

function allModes<T>(f: (mode: ProbedMode) => T): Record<ProbedMode, T> {
  return { MISSING: f('MISSING'), MINOR: f('MINOR'), WP: f('WP') };
}

function notTried(info: BackingSourceInfo, create: Finding): BackingReport {
  const why = skipped(create.status === 'skipped' ? create.detail : `not tried: ${info.name} could not be created`, create.remedy ?? '');
  return { source: info.name, description: info.description, pageSize: info.pageSize, create, register: allModes(() => why) };
}

/** UFFDIO_REGISTER of the backing's primary mapping in `mode`, on a userfaultfd of its own. */
function tryRegister(backing: Backing, mode: ProbedMode): RegistrationFinding {
  const info = backing.info;
  let uffd: Userfaultfd;
  try {
    uffd = Userfaultfd.open({ features: featuresFor(info, mode) });
  } catch (e) {
    return failed(e, PERMISSION_REMEDY);
  }
  try {
    const registration = uffd.register(backing.primary.address, backing.primary.length, [mode]);
    const ioctls = (['COPY', 'ZEROPAGE', 'CONTINUE', 'WRITEPROTECT', 'POISON', 'MOVE', 'WAKE'] as const).filter((n) => registration.allows(n));
    return { ...ok(`registered; allows ${ioctls.join(' ') || 'no fill ioctls'}`), ioctls };
  } catch (e) {
    const message = e instanceof Error ? e.message : String(e);
    if (info.name === 'guest_memfd' && isSystemError(e, 'EINVAL')) return missing(`${message}: ${GUEST_MEMFD_UNSUPPORTED}`, GUEST_MEMFD_REMEDY);
    if (isSystemError(e, 'EPERM')) return missing(message, PERMISSION_REMEDY);
    if (mode === 'MINOR' && !info.shared && !info.hugetlb) {
      return missing(`${message}: MINOR faults need a page cache, which private anonymous memory has not`, 'Use shmem or shared_hugetlb for MINOR faults');
    }
    return missing(
      `${message}: this kernel refuses ${mode} registration on ${info.name}`,
      `Use a backing source whose ${mode} registration is ok here, or a kernel that supports ${mode} on ${info.name}`,
    );
  } finally {
    uffd.close();
  }
}

/**
 * Makes sure one page of a hugetlb source's pool is available, growing the pool only when
 * asked to. Returns what to undo afterwards, or why the source cannot be tried.
 */
function hugepageForProbe(info: BackingSourceInfo, reserve: boolean): { release: () => void } | Finding {
  const size = formatSize(info.pageSize);
  const pool = hugepagePool(info.pageSize);
  if (!pool.exists) {
    return skipped(
      `not tried: this kernel has no ${size} hugepage pool`,
      info.pageSize >= 2 ** 30 ? 'Boot with `hugepagesz=1G hugepages=<n>` on the kernel command line' : 'Use a kernel built with CONFIG_HUGETLBFS',
    );
  }
  if (pool.available >= 1) return { release: () => {} };
  if (!reserve) {
    return skipped(
      `not tried: no hugepages available (${size} pool: ${pool.total} total, ${pool.free} free, ${pool.reserved} reserved)`,
      `${reserveRemedy(info.pageSize, 1)}, or run \`postcopy probe --reserve-hugepages\``,
    );
  }
  try {
    const r = reserveHugepages(info.pageSize, 1);
    if (r.available >= 1) return { release: r.release };
    r.release();
    return skipped(
      `not tried: could not reserve one ${size} hugepage (memory too fragmented?)`,
      info.pageSize >= 2 ** 30 ? 'Reserve 1 GiB pages at boot: `hugepagesz=1G hugepages=<n>`' : 'Reserve hugepages early after boot, or at boot with `hugepages=<n>`',
    );
  } catch (e) {
    const f = failed(e, reserveRemedy(info.pageSize, 1));
    return skipped(`not tried: ${f.detail}`, f.remedy ?? reserveRemedy(info.pageSize, 1));
  }
}

export function probeBacking(source: BackingSourceName, context: BackingProbeContext): BackingReport {
  const info = BACKING_INFO[source];
  if (context.uffd.status !== 'ok') {
    return notTried(info, skipped('not tried: no usable userfaultfd', context.uffd.remedy ?? PERMISSION_REMEDY));
  }
  let createGuestMemfd: ((size: number) => number) | undefined;
  if (source === 'guest_memfd') {
    if (!(context.vm instanceof Vm)) return notTried(info, skipped(`not tried: no KVM VM (${context.vm.detail})`, context.vm.remedy ?? kvmMissingRemedy()));
    createGuestMemfd = context.vm.guestMemfdFactory();
  }
  let release = () => {};
  if (info.hugetlb) {
    const pool = hugepageForProbe(info, context.reserveHugepages);
    if ('status' in pool) return notTried(info, pool);
    release = pool.release;
  }
  try {
    let backing: Backing;
    try {
      backing = Backing.create(source, info.pageSize, { createGuestMemfd, name: `postcopy-probe-${source}` });
    } catch (e) {
      return notTried(info, failed(e, `${info.name} memory could not be created here; use another backing source`));
    }
    try {
      return {
        source,
        description: info.description,
        pageSize: info.pageSize,
        create: ok(`one ${formatSize(info.pageSize)} page mapped`),
        register: allModes((mode) => tryRegister(backing, mode)),
      };
    } finally {
      backing.close();
    }
  } finally {
    release();
  }
}
