/** The terminal lines of `postcopy snapshot save` and `restore` (--json prints the reports as they are). */
import type { OracleResult } from '../../guest/oracle.js';
import { formatSize } from '../../util/format.js';
import type { RestoreReport } from './restore.js';
import type { SaveReport } from './save.js';
import type { LiveSaveReport } from './live-save.js';

const f1 = (n: number) => n.toFixed(1);
const f2 = (n: number) => n.toFixed(2);
const mib = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;

export interface SaveRunReport {
  readonly guest: string;
  readonly vcpus: number;
  readonly source: string;
  /** What the workers touch each pass (workload.ts describeWorkload). */
  readonly workload: string;
  /** Guest started → the save began (paused, or --live: its first round). */
  readonly ranMs: number;
  /** Guest paused → both files written; --live: guest paused → the last units and the state written (save.live.pause). */
  readonly pausedMs: number;
  readonly save: SaveReport | LiveSaveReport;
  readonly before: OracleResult;
  /** --resume: the oracle after the guest ran on from where it was saved. */
  readonly after: OracleResult | undefined;
}

export function oracleLine(o: OracleResult): string {
  return `${o.checkedPages} page(s) checked, ${o.lostWrites} lost write(s); the guest saw ${o.guestMismatches} mismatch(es)`;
}

export const oracleClean = (o: OracleResult) => o.lostWrites === 0 && o.guestMismatches === 0;

export function saveLines(r: SaveRunReport): string[] {
  const s = r.save;
  const memory = `memory:   ${s.dataUnits} of ${s.units} ${formatSize(s.unit)} unit(s) written, ${s.holeUnits} left as holes (the file takes ${mib(s.allocatedBytes)} of ${formatSize(s.size)})`;
  const oracle = `oracle:   ${'live' in s ? 'at the pause' : 'before saving'} ${oracleLine(r.before)}${r.after ? `; after resuming ${oracleLine(r.after)}` : ''}`;
  if (!('live' in s)) {
    return [
      `guest:    ${formatSize(s.size)} ${r.guest} guest, ${r.vcpus} worker(s), ${r.source}; ran ${f1(r.ranMs)} ms, then paused`,
      memory,
      `saved:    ${s.dir} in ${f1(r.pausedMs)} ms while paused (scan ${f1(s.scanMs)} ms, write and SHA-256 of ${s.regions} region(s) ${f1(s.writeMs)} ms)`,
      oracle,
    ];
  }
  const l = s.live;
  const pagesOf = formatSize(s.unit) === '4 KiB' ? '' : ` (${formatSize(s.unit)} units)`;
  return [
    `guest:    ${formatSize(s.size)} ${r.guest} guest, ${r.vcpus} worker(s), ${r.source}; ran ${f1(r.ranMs)} ms, then saved live (${l.tracker} tracking)`,
    `workload: ${r.workload}`,
    `rounds:   ${l.rounds.length} while it ran, ${f1(l.roundsMs)} ms: ${l.rounds.map((x) => x.pages).join(', ')} page(s)${pagesOf}; stopped: ${l.reason}${l.throttlePercent ? `, guest throttled to ${100 - l.throttlePercent}% of its time` : ''}`,
    `pause:    ${f2(l.pause.ms)} ms (workers stopping ${f2(l.pause.stopMs)} ms) for the last ${l.pause.pages} dirty page(s) of ${s.size / 4096} and the state`,
    memory,
    `saved:    ${s.dir} in ${f1(l.totalMs)} ms in all (SHA-256 of ${s.regions} region(s) over the final file ${f1(l.hashMs)} ms, after the pause)`,
    oracle,
  ];
}

export function restoreLines(r: RestoreReport, nodeStartMs?: number, prestartMs?: number): string[] {
  const t = r.timings;
  const what = r.mode === 'minor' ? 'MINOR faults' : 'MISSING faults';
  const bulk = [r.eager ? 'eager' : '', r.prefetchRuns ? `prefetch ${r.prefetchUnits} unit(s) in ${r.prefetchRuns} run(s)` : '', r.background ? 'background fill' : ''].filter(Boolean).join(', ');
  return [
    `restore:  ${formatSize(r.size)} ${r.backend} guest, ${r.vcpus} worker(s), ${what}${bulk ? ` + ${bulk}` : ', on demand'}; memory: ${r.memory}`,
    `workload: ${r.workload}`,
    `resume:   ${f2(t.resumeMs)} ms (snapshot opened → guest running): open ${f2(t.openMs)}, ${r.verified ? `verify ${f1(t.verifyMs)}` : 'not verified'}, build and register ${f2(t.buildMs)}, threads ${f2(t.threadsMs)}${r.eager ? `, eager ${f1(t.eagerMs)}` : ''}${t.prefetchMs > 0 ? `, prefetch ${f1(t.prefetchMs)}` : ''}`,
    `workload: every worker one whole pass ${f1(t.workloadMs)} ms after resuming (${f1(t.workloadEndMs)} ms after opening)` +
      `${Number.isFinite(t.prefetchDoneMs) ? `; prefetch done at ${f1(t.prefetchDoneMs)} ms` : ''}${Number.isFinite(t.backgroundDoneMs) ? `; background done at ${f1(t.backgroundDoneMs)} ms` : ''}`,
    `faults:   ${r.faults.total} through userfaultfd (${r.faults.missing} MISSING, ${r.faults.minor} MINOR), ${f1(r.faults.meanServiceUs)} µs mean service`,
    `placed:   ${r.placed.byFault} on demand, ${r.placed.byPrefetch} prefetched, ${r.placed.byBackground} in the background, ${r.placed.eager} eager (${r.ioctls} ioctl(s)); ${r.placed.afterPause} after the pause for the check`,
    `file:     ${mib(r.bytesRead)} read (${r.copiedUnits} unit(s) copied, ${r.continuedUnits} mapped from the page cache, ${r.zeroUnits} zero)`,
    `oracle:   ${oracleLine(r.oracle)}`,
    ...(nodeStartMs === undefined ? [] : [`node:     ${f1(nodeStartMs)} ms from process start to the command (not in the figures above)`]),
    ...(prestartMs === undefined ? [] : [`threads:  ${f1(prestartMs)} ms to start the restorer's threads before the snapshot was opened (not in the figures above)`]),
  ];
}
