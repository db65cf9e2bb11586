import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { PermissionError } from '../errors.js';
import { integer } from '../native/args.js';
import { formatSize } from '../util/format.js';

/** The state of one hugetlb pool (/sys/kernel/mm/hugepages/hugepages-<size>kB). */
export interface HugepagePool {
  readonly pageSize: number;
  /** Whether the kernel has a pool of this size at all. */
  readonly exists: boolean;
  readonly total: number;
  readonly free: number;
  /** Pages promised to mappings but not yet faulted in; free - reserved are available. */
  readonly reserved: number;
  readonly available: number;
}

function poolDir(pageSize: number): string {
  return `/sys/kernel/mm/hugepages/hugepages-${pageSize / 1024}kB`;
}

function readCount(dir: string, name: string): number {
  return Number(readFileSync(`${dir}/${name}`, 'utf8').trim());
}

export function hugepagePool(pageSize: number): HugepagePool {
  integer('hugepagePool', 'pageSize', pageSize, { min: 4096, multipleOf: 4096, unit: '4096' });
  const dir = poolDir(pageSize);
  if (!existsSync(dir)) return { pageSize, exists: false, total: 0, free: 0, reserved: 0, available: 0 };
  const total = readCount(dir, 'nr_hugepages');
  const free = readCount(dir, 'free_hugepages');
  const reserved = readCount(dir, 'resv_hugepages');
  return { pageSize, exists: true, total, free, reserved, available: free - reserved };
}

/** The command that reserves `count` more pages of this size, for messages. */
export function reserveRemedy(pageSize: number, count: number): string {
  const pool = hugepagePool(pageSize);
  const want = pool.total + count;
  return (
    `Reserve ${formatSize(pageSize)} hugepages as root: ` +
    `\`echo ${want} > ${poolDir(pageSize)}/nr_hugepages\`` +
    (pageSize === 2 * 1024 * 1024 ? ` (or \`sysctl vm.nr_hugepages=${want}\`)` : '')
  );
}

/**
 * Makes sure at least `count` pages of `pageSize` are available, growing the pool if
 * needed (root only), and returns a function that puts the pool back to its old size.
 * Growing can fall short when memory is fragmented: the result says how many are there.
 */
export function reserveHugepages(pageSize: number, count: number): { available: number; grew: boolean; release: () => void } {
  integer('reserveHugepages', 'count', count, { min: 0 });
  const before = hugepagePool(pageSize);
  if (!before.exists) return { available: 0, grew: false, release: () => {} };
  if (before.available >= count) return { available: before.available, grew: false, release: () => {} };
  const file = `${poolDir(pageSize)}/nr_hugepages`;
  try {
    writeFileSync(file, String(before.total + count - before.available));
  } catch (e) {
    throw new PermissionError(`cannot grow the ${formatSize(pageSize)} hugepage pool (${(e as Error).message})`, reserveRemedy(pageSize, count));
  }
  let released = false;
  return {
    available: hugepagePool(pageSize).available,
    grew: true,
    release: () => {
      if (released) return;
      released = true;
      writeFileSync(file, String(before.total));
    },
  };
}
