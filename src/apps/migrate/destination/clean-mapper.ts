/**
 * MINOR: maps runs of clean pages into the guest's mapping after (or before) resuming:
 * their bytes are in the page cache already (written through the alias in precopy), only
 * the guest mapping's page-table entries are missing. A worker touching a clean page
 * before this reaches it has the fault reader map it (EEXIST here, then page by page).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { hva } from '../../../address.js';
import { isSystemError } from '../../../native/errors.js';
import type { Userfaultfd } from '../../../uffd/userfaultfd.js';
import { fillAll } from '../../../uffd/fill.js';

/** Maps every unit whose bit is clear in `stale`; yields the CPU every `yieldEvery` units (0: never). Returns ms. */
export async function mapCleanPages(uffd: Userfaultfd, host: (u: number) => number, unit: number, units: number, stale: Uint8Array, yieldEvery: number): Promise<number> {
  const t0 = process.hrtime.bigint();
  const chunk = Math.max(1, (2 * 2 ** 20) / unit);
  const isClean = (u: number) => !stale[u >> 3]! || ((stale[u >> 3]! >> (u & 7)) & 1) === 0;
  let done = 0;
  for (let u = 0; u < units; ) {
    if (!isClean(u)) {
      u++;
      continue;
    }
    let n = 1;
    while (n < chunk && u + n < units && isClean(u + n)) n++;
    try {
      fillAll((a, _s, len) => uffd.continue(hva(a), len), host(u), 0, n * unit);
    } catch (e) {
      if (!isSystemError(e, 'EEXIST')) throw e;
      for (let i = 0; i < n; i++) {
        try {
          uffd.continue(hva(host(u + i)), unit);
        } catch (e2) {
          if (!isSystemError(e2, 'EEXIST')) throw e2;
        }
      }
    }
    u += n;
    done += n;
    if (yieldEvery > 0 && done >= yieldEvery) {
      done = 0;
      // A timer, not setImmediate: the thread must leave the CPU, not just the event
      // loop, or the workers (lower priority) wait behind the bulk mapping: it doubled the
      // guest's stall here.
      await sleep(0);
    }
  }
  return Number(process.hrtime.bigint() - t0) / 1e6;
}
