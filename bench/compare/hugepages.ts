/**
 * Hugetlb pools for the hugetlb configurations: grow the pool to what the largest one needs
 * before the runs, and put it back exactly as it was afterwards (also on Ctrl-C / SIGTERM,
 * through restore(), which the caller wires to those signals).
 */
import { readFileSync, writeFileSync } from 'node:fs';

const POOLS = '/sys/kernel/mm/hugepages';

function poolDir(pageSize: number): string {
  return `${POOLS}/hugepages-${pageSize / 1024}kB`;
}

function readInt(path: string): number | null {
  try {
    return Number(readFileSync(path, 'utf8').trim());
  } catch {
    return null;
  }
}

/** The default huge page size (Hugepagesize in /proc/meminfo), 2 MiB if unreadable. */
export function defaultHugePageSize(): number {
  try {
    const m = /^Hugepagesize:\s+(\d+) kB$/m.exec(readFileSync('/proc/meminfo', 'utf8'));
    if (m) return Number(m[1]) * 1024;
  } catch {
    // fall through
  }
  return 2 * 2 ** 20;
}

/** Huge pages a configuration's test memory takes: vCPUs × bytes, plus a few for alignment (memslot mmap/memfd padding). */
export function hugePagesNeeded(vcpus: number, bytesPerVcpu: number, pageSize: number): number {
  return Math.ceil((vcpus * bytesPerVcpu) / pageSize) + 4;
}

export interface PoolState {
  pageSize: number;
  /** nr_hugepages before we touched it. */
  original: number;
  /** What we set it to (null: left alone). */
  setTo: number | null;
  /** free_hugepages after reserving. */
  free: number;
}

export class HugePagePools {
  readonly pools = new Map<number, PoolState>();
  #restored = false;

  /**
   * Makes `need` pages of `pageSize` free. Returns null when they are, else the reason
   * (the configurations that need them are then skipped with it).
   */
  reserve(pageSize: number, need: number): string | null {
    const dir = poolDir(pageSize);
    const label = `${pageSize / 2 ** 20} MiB`;
    const nr = readInt(`${dir}/nr_hugepages`);
    const free = readInt(`${dir}/free_hugepages`);
    if (nr === null || free === null) return `this kernel has no ${label} hugetlb pool (${dir})`;
    const state: PoolState = this.pools.get(pageSize) ?? { pageSize, original: nr, setTo: null, free };
    this.pools.set(pageSize, state);
    if (free >= need) {
      state.free = free;
      return null;
    }
    const target = nr + (need - free);
    try {
      writeFileSync(`${dir}/nr_hugepages`, `${target}\n`);
      state.setTo = target;
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code ?? String(e);
      return `cannot reserve ${need} ${label} huge pages (${free} free): writing ${dir}/nr_hugepages: ${code}; as root: echo ${target} > ${dir}/nr_hugepages`;
    }
    state.free = readInt(`${dir}/free_hugepages`) ?? 0;
    if (state.free < need) {
      return `asked for ${target} ${label} huge pages, the kernel made ${state.free} free of the ${need} needed (memory too fragmented?)`;
    }
    return null;
  }

  /** Puts every pool we changed back to its original size. Idempotent, synchronous (safe in 'exit'). */
  restore(): string[] {
    if (this.#restored) return [];
    this.#restored = true;
    const done: string[] = [];
    for (const state of this.pools.values()) {
      if (state.setTo === null) continue;
      const path = `${poolDir(state.pageSize)}/nr_hugepages`;
      try {
        writeFileSync(path, `${state.original}\n`);
        done.push(`${path}: ${state.setTo} -> ${state.original}`);
      } catch (e) {
        done.push(`${path}: could not restore ${state.original}: ${(e as Error).message}`);
      }
    }
    return done;
  }
}
