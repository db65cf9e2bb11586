/** The figures of a migration as text lines and as JSON (bigints as decimal strings). */
import { formatSize } from '../../util/format.js';
import type { DestinationReport } from './destination/destination.js';
import type { SourceReport } from './source/source.js';

const f1 = (n: number) => (Number.isFinite(n) ? n.toFixed(1) : 'n/a');
const f2 = (n: number) => (Number.isFinite(n) ? n.toFixed(2) : 'n/a');

export function toJson(value: unknown): string {
  return JSON.stringify(value, (_, v: unknown) => (typeof v === 'bigint' ? String(v) : v), 2);
}

/** What the last look before the switchover found: the set, the rates, the time to send it. */
function lastLook(s: SourceReport): string {
  const n = s.rounds.at(-1)?.next;
  if (!n) return '';
  return ` (the last look found ${n.dirty} dirty page(s): ${f1(n.predictedMs)} ms to send at ${f1(n.bandwidthMBps)} MB/s; the guest dirtied ${f1(n.dirtyPagesPerSecond)} pages/s)`;
}

export function sourceLines(s: SourceReport): string[] {
  return [
    `precopy:    ${s.rounds.length} round(s) [${s.rounds.map((r) => r.pages).join(', ')}] pages in ${f1(s.precopyMs)} ms (first round ${f1(s.streamMBps)} MB/s of guest memory` +
      `${s.zeroPages ? `; ${s.zeroPages} never written, sent as zero runs` : ''})`,
    `switchover: ${s.switchover.reason}${s.switchover.throttlePercent ? `, guest throttled to ${100 - s.switchover.throttlePercent}% of its time` : ''}${lastLook(s)}`,
    `blackout:   ${s.stalePages} stale page(s); downtime ${f2(s.downtimeMs)} ms${s.clock ? ` ± ${f2(s.clock.errorMs)}` : ''} (source pause → destination resume${s.clock ? `, the destination's clock ${f2(s.clock.offsetMs)} ms from this one's` : ', on one clock'}): the guest stopped in ${f2(s.blackout.pauseMs)} ms, state and stale set sent ${f2(s.blackout.stateMs)} ms later`,
    `post-copy:  ${s.onDemandPages} page(s) on demand, ${s.backgroundPages} in the background${s.lateRequests ? `, ${s.lateRequests} request(s) for pages already sent` : ''}`,
    `total:      ${f1(s.totalMs)} ms`,
    `guest:      ${s.guest} guest, ${s.tracker} tracking; longest gap in its own progress before the pause ${f2(Math.max(...s.states.map((st) => Number(st.maxGapTicks))) / s.tscKhz)} ms (dirty tracking and a busy host)`,
    `link:       ${s.security}`,
    ...(s.recovery.pauses ? [`recovery:   post-copy paused ${s.recovery.pauses} time(s) by a lost link, ${f1(s.recovery.pausedMs)} ms in all; ${s.recovery.resentPages} page(s) sent again`] : []),
  ];
}

export function destinationLines(d: DestinationReport): string[] {
  const l = d.latencyMs;
  const stall = Number.isFinite(d.guestStallMs) ? `${f2(d.guestStallMs)} ms` : 'not measured (guest clocks could not be lined up)';
  return [
    `guest:      ${formatSize(d.pages * d.unit)}, ${d.vcpus} ${d.guest === 'kvm' ? 'vCPU(s)' : 'thread(s)'} (${d.guest} guest), ${d.source}, ${d.mode.toUpperCase()} faults; memory prepared in ${f1(d.prepareMs)} ms before accepting`,
    `link:       ${d.security}`,
    `resume:     downtime ${f2(d.downtimeMs)} ms, of which ${f2(d.resumeMs)} ms here after SWITCHOVER${d.mode === 'minor' ? `; clean pages mapped in ${f1(d.mapCleanMs)} ms` : ''}`,
    `post-copy:  ${d.stalePages} stale page(s) in ${f1(d.postcopyMs)} ms: ${d.onDemandPages} requested, ${d.backgroundPages} from the background stream${d.duplicatePages ? `, ${d.duplicatePages} duplicate(s) dropped` : ''}`,
    `faults:     ${d.faults.faults} (${d.faults.local} resolved at once, ${d.faults.forwarded} waited on the network)` +
      (l.count > 0 ? `; latency p50 ${f2(l.p50)} ms, p99 ${f2(l.p99)} ms, max ${f2(l.max)} ms` : ''),
    ...(l.count > 0 ? [`blocktime:  ${d.blocktimeMs.map((b, i) => `vCPU ${i} ${f2(b)} ms`).join(', ')}`] : []),
    `stall:      longest gap in the guest's own progress since the source paused it: ${stall}`,
    ...(d.recovery.pauses ? [`recovery:   post-copy paused ${d.recovery.pauses} time(s) by a lost link, ${f1(d.recovery.pausedMs)} ms in all; the guest ran on where it had its pages`] : []),
    `oracle:     ${d.oracle.checkedPages} page(s) checked, ${d.oracle.lostWrites} lost write(s); the guest saw ${d.oracle.guestMismatches} mismatch(es)` +
      (d.oracle.first.length ? `; first: ${d.oracle.first.slice(0, 4).map((b) => `0x${b.guestAddress.toString(16)} holds ${b.found}, expected ${b.expected}`).join('; ')}` : ''),
  ];
}

/** Whether the oracle passed: no page behind, none ahead, and the guest saw nothing wrong. */
export function clean(d: DestinationReport): boolean {
  return d.oracle.lostWrites === 0 && d.oracle.guestMismatches === 0;
}
