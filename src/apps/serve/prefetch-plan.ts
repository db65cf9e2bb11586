/**
 * `postcopy serve --prefetch FILE`: which recorded units a userfaultfd gets, and in what
 * order. The record's runs (prefetchRuns: consecutive units, in recorded order) are in
 * units of the memory file; a peer's regions map parts of the file. Each run is cut to the
 * regions it falls in and becomes, per region, a run of that region's units (one
 * UFFDIO_COPY each); units of the record outside every region are not this peer's.
 */
import type { GuestRegionUffdMapping } from './mappings.js';

export interface RegionRun {
  /** Index into the userfaultfd's regions. */
  readonly region: number;
  /** The first unit, counted from the region's start, and how many. */
  readonly first: number;
  readonly count: number;
}

export function regionRuns(fileRuns: readonly (readonly [first: number, count: number])[], regions: readonly GuestRegionUffdMapping[], unit: number): RegionRun[] {
  const out: RegionRun[] = [];
  for (const [first, count] of fileRuns) {
    regions.forEach((r, region) => {
      const start = r.offset / unit;
      const end = start + r.size / unit;
      const from = Math.max(first, start);
      const to = Math.min(first + count, end);
      if (from < to) out.push({ region, first: from - start, count: to - from });
    });
  }
  return out;
}
