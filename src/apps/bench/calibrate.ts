import { MiB } from '../../memory/constants.js';
import type { BenchOptions } from './options.js';
import { placementCandidates } from './placement.js';
import type { BenchResult, Placement } from './result.js';

/** What calibration tried, for --json. */
export interface Calibration {
  readonly tried: readonly { readonly name: string; readonly rates: readonly number[] }[];
  readonly chosen: string;
}

const ROUNDS = 3;
const BYTES = 4 * MiB;

/**
 * Decides where vCPUs and readers run by trying each candidate placement on a small run of
 * the same experiment (same mode, vCPUs, uffds and readers, on plain threads and 4 KiB
 * memory of the same kind), alternating, best of three rounds each: machines of the same
 * kind differ in what a cross-CPU wake-up costs, so this is measured, not assumed.
 */
export async function calibratePlacement(
  o: BenchOptions,
  uffds: number,
  run: (o: BenchOptions, placement: Placement) => Promise<BenchResult>,
): Promise<Placement & { calibration: Calibration }> {
  const candidates = placementCandidates(o, uffds);
  const source = o.mode === 'MINOR' ? 'shmem' : 'anonymous';
  const small: BenchOptions = { ...o, source, bytesPerVcpu: BYTES, vcpuThreads: true, randomAccess: false };
  const rates = candidates.map(() => [] as number[]);
  for (let round = 0; round < ROUNDS; round++) {
    for (let i = 0; i < candidates.length; i++) {
      const r = await run(small, candidates[i]!);
      rates[i]!.push(((BYTES / 4096) * o.vcpus) / (r.totalNs / 1e9));
    }
  }
  let best = 0;
  for (let i = 1; i < candidates.length; i++) if (Math.max(...rates[i]!) > Math.max(...rates[best]!)) best = i;
  const { name, ...chosen } = candidates[best]!;
  return {
    ...chosen,
    calibration: { tried: candidates.map((c, i) => ({ name: c.name, rates: rates[i]!.map(Math.round) })), chosen: name },
  };
}
