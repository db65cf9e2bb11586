import { readFileSync } from 'node:fs';
import { GiB, MiB } from '../memory/constants.js';
import { hugepagePool, reserveRemedy, type HugepagePool } from '../memory/hugepages.js';
import { formatSize } from '../util/format.js';
import { type Finding, missing, ok } from './finding.js';

export type HugepagePoolReport = HugepagePool & Finding;

export interface HugepagesReport {
  /** The 2 MiB and 1 GiB hugetlb pools (what the *_hugetlb sources draw from). */
  readonly pools: HugepagePoolReport[];
  /** Transparent huge pages (anonymous_thp): the selected policy of each knob, for information. */
  readonly thp: { readonly enabled: string | null; readonly shmemEnabled: string | null };
}

/** How many pages the remedy suggests: 1 GiB of 2 MiB pages (the kernel test's default per vCPU), or one 1 GiB page. */
function suggested(pageSize: number): number {
  return pageSize === 2 * MiB ? GiB / pageSize : 1;
}

function poolReport(pageSize: number): HugepagePoolReport {
  const pool = hugepagePool(pageSize);
  const size = formatSize(pageSize);
  if (!pool.exists) {
    return {
      ...pool,
      ...missing(`no ${size} pool in this kernel`, pageSize >= GiB ? 'Boot with `hugepagesz=1G hugepages=<n>`' : 'Use a kernel built with CONFIG_HUGETLBFS'),
    };
  }
  const counts = `${pool.total} total, ${pool.free} free, ${pool.reserved} reserved`;
  if (pool.available > 0) return { ...pool, ...ok(`${pool.available} available (${counts})`) };
  return { ...pool, ...missing(`none available (${counts})`, reserveRemedy(pageSize, suggested(pageSize))) };
}

/** The selected value of a sysfs policy knob: 'always [madvise] never' -> 'madvise'. */
function selected(path: string): string | null {
  try {
    const text = readFileSync(path, 'utf8');
    return /\[([^\]]+)\]/.exec(text)?.[1] ?? text.trim();
  } catch {
    return null;
  }
}

export function probeHugepages(): HugepagesReport {
  return {
    pools: [poolReport(2 * MiB), poolReport(GiB)],
    thp: {
      enabled: selected('/sys/kernel/mm/transparent_hugepage/enabled'),
      shmemEnabled: selected('/sys/kernel/mm/transparent_hugepage/shmem_enabled'),
    },
  };
}
