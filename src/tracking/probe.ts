/**
 * Whether uffd-wp dirty tracking works here, found by trying it: on a small anonymous and
 * a small shmem range, write a known set of pages (some populated before tracking began,
 * some never populated), collect, and check that exactly those pages are reported, then
 * that a collection with no writes in between reports none. A kernel version says little:
 * kernels lacking fixes 07b4377bdbe7 and 40de8160ca7f offer WP_ASYNC and PAGEMAP_SCAN and
 * misreport (gVisor's hostmm warns of Ubuntu's 6.8), so behaviour is what counts.
 */
import { PostcopyError } from '../errors.js';
import { Backing } from '../memory/backing.js';
import { UffdWpTracker } from './uffd-wp.js';

export type UffdWpProbe = { usable: true; features: string[] } | { usable: false; reason: string; remedy: string };

const PAGES = 256;
const PAGE = 4096;
/** Pages written between the collections: word edges, both halves of a word, a run, the last page. */
const WRITTEN = [0, 1, 31, 32, 63, 64, 65, 100, 101, 102, 103, 127, 128, 200, PAGES - 1];

const MISREPORT_REMEDY =
  'This kernel\'s uffd-wp async tracking cannot be trusted (it may lack fixes 07b4377bdbe7 and 40de8160ca7f): ' +
  'use a kernel with them, or track with kvm-dirty-log';

/** The reported pages of a collection, as page numbers. */
function reported(words: BigUint64Array, pages: number): number[] {
  const out: number[] = [];
  for (let p = 0; p < pages; p++) if ((words[p >>> 6]! >> BigInt(p & 63)) & 1n) out.push(p);
  return out;
}

function describe(pages: number[]): string {
  return pages.length > 20 ? `${pages.length} pages (${pages.slice(0, 20).join(', ')}, ...)` : `[${pages.join(', ')}]`;
}

/** One backing's check: the features used, and a reason when it misbehaved. */
function check(source: 'anonymous' | 'shmem'): { reason: string; features: readonly string[] } | { features: readonly string[] } {
  const backing = Backing.create(source, PAGES * PAGE, { name: 'postcopy-probe-uffd-wp' });
  let tracker: UffdWpTracker | undefined;
  try {
    const bytes = backing.primary.bytes();
    // Populate the first half: the rest has never been touched when tracking starts.
    for (let p = 0; p < PAGES / 2; p++) bytes[p * PAGE] = 1;
    tracker = UffdWpTracker.start({ address: backing.primary.address, size: backing.size, pageSize: PAGE });
    const first = reported(tracker.collect(), PAGES);
    if (first.length !== PAGES) return { features: tracker.features, reason: `${source}: the first collection reported ${first.length} of ${PAGES} pages, not all` };
    for (const p of WRITTEN) bytes[p * PAGE + 8] = 2;
    const got = reported(tracker.collect(), PAGES);
    if (got.join() !== WRITTEN.join()) {
      return { features: tracker.features, reason: `${source}: after writes to pages ${describe(WRITTEN)}, PAGEMAP_SCAN reported ${describe(got)}` };
    }
    const clean = reported(tracker.collect(), PAGES);
    if (clean.length) return { features: tracker.features, reason: `${source}: with no writes since the last collection, PAGEMAP_SCAN reported ${describe(clean)}` };
    return { features: tracker.features };
  } finally {
    tracker?.close();
    backing.close();
  }
}

/**
 * Tries uffd-wp tracking on anonymous and shmem memory. usable: the features it used
 * (the userfaultfd features, and PAGEMAP_SCAN); otherwise why not, and the remedy.
 */
export function probeUffdWp(): UffdWpProbe {
  const features = new Set<string>();
  try {
    for (const source of ['anonymous', 'shmem'] as const) {
      const r = check(source);
      for (const f of r.features) features.add(f);
      if ('reason' in r) return { usable: false, reason: r.reason, remedy: MISREPORT_REMEDY };
    }
  } catch (e) {
    if (e instanceof PostcopyError) return { usable: false, reason: e.detail, remedy: e.remedy ?? 'Track with kvm-dirty-log' };
    return { usable: false, reason: e instanceof Error ? e.message : String(e), remedy: 'Track with kvm-dirty-log, and report this failure' };
  }
  return { usable: true, features: [...features, 'PAGEMAP_SCAN'] };
}
