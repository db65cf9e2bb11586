/**
 * The correctness oracle, for any guest backend: every page's counter against its
 * worker's position, as the guest's workload defines it (workload.ts: pages the pass has
 * reached hold its count, the others one less, pages outside a working set what the first
 * pass wrote); anything else is a lost (or stray) write. Read through the memory's own
 * mapping (the alias of shared memory, so nothing faults), with userfaultfd unregistered
 * or every page present.
 */
import { GUEST_PAGE, type MigratableGuest, type WorkerState } from './guest.js';

export interface OracleResult {
  readonly checkedPages: number;
  /** Pages whose counter is not what their worker wrote last. */
  readonly lostWrites: number;
  readonly first: readonly { guestAddress: number; found: string; expected: string }[];
  /** What the guest itself saw: accesses that found a counter other than the last pass's. */
  readonly guestMismatches: number;
}

export function checkGuest(guest: MigratableGuest, states: readonly WorkerState[]): OracleResult {
  const view = (guest.backing.alias ?? guest.backing.primary).bytes();
  // Counters as two 32-bit halves compared as doubles: a BigInt per page made this loop
  // take seconds for a GiB.
  const words = new Uint32Array(view.buffer, view.byteOffset, view.byteLength / 4);
  const wordsPerPage = GUEST_PAGE / 4;
  let lostWrites = 0;
  let checkedPages = 0;
  const first: { guestAddress: number; found: string; expected: string }[] = [];
  states.forEach((s, i) => {
    const slice = guest.slice(i);
    const firstPage = (slice.guestAddress - guest.shape.guestAddress) / GUEST_PAGE;
    const pass = Number(s.pass);
    for (let p = 0; p < slice.pages; p++) {
      const w = (firstPage + p) * wordsPerPage;
      const found = words[w + 1]! * 2 ** 32 + words[w]!;
      const expected = guest.plan.expectedCount(pass, s.index, p);
      if (found === expected) continue;
      lostWrites++;
      if (first.length < 16) first.push({ guestAddress: slice.guestAddress + p * GUEST_PAGE, found: String(BigInt(words[w + 1]!) * 2n ** 32n + BigInt(words[w]!)), expected: String(expected) });
    }
    checkedPages += slice.pages;
  });
  return { checkedPages, lostWrites, first, guestMismatches: states.reduce((n, s) => n + s.mismatches, 0) };
}

/** The longest gap in any worker's own progress, in the guest's clock ticks. */
export function longestGap(states: readonly WorkerState[]): bigint {
  let gap = 0n;
  for (const s of states) if (s.maxGapTicks > gap) gap = s.maxGapTicks;
  return gap;
}

/**
 * Lines the destination guest's clock up with the source's plus the time that passed, so
 * the guest's own gap measurement spans the migration. On one host with a shared clock
 * (the threads guest's CLOCK_MONOTONIC; this machine's PVM KVM keeps guest TSC = host TSC)
 * nothing needs doing; elsewhere set it, and if the backend keeps its own, say the stall
 * cannot be measured (false).
 */
export function alignClock(guest: MigratableGuest, sourceClock: bigint, sourceWallMs: number): boolean {
  const { ticks, ticksPerMs } = guest.clock();
  const expected = sourceClock + BigInt(Math.round((Date.now() - sourceWallMs) * ticksPerMs));
  const tolerance = BigInt(Math.round(ticksPerMs * 50)); // 50 ms
  const off = (t: bigint) => (t > expected ? t - expected : expected - t) > tolerance;
  if (!off(ticks)) return true;
  guest.setClock(expected);
  return !off(guest.clock().ticks);
}
