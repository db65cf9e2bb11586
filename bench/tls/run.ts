/**
 * What TLS costs a migration's link, side by side in one run: the page stream's throughput
 * and a request → page round trip (bench/migrate/link.ts: src/transport's Channel between
 * two processes on loopback), plain TCP and TLS 1.3 with a pre-shared key, alternating so
 * that the machine's noise falls on both alike. Targets (issue 13): TLS costs ≤ 10% of
 * stream throughput at 1 Gbit/s and ≤ 0.1 ms per fault round trip.
 *
 *   npm run bench:tls -- [--runs 5] [--bytes 1G] [--pings 2000] [--json]
 */
import { parseArgs } from 'node:util';
import { parseSize } from '../../src/util/format.js';
import { describeMachine, machineFacts } from '../lib/machine.js';
import { type LinkFigures, measureLink } from '../migrate/link.js';

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)]!;

const { values } = parseArgs({ options: { runs: { type: 'string' }, bytes: { type: 'string' }, pings: { type: 'string' }, json: { type: 'boolean' } } });
const runs = Number(values.runs ?? 5);
const bytes = parseSize(values.bytes ?? '1G') ?? 2 ** 30;
const pings = Number(values.pings ?? 2000);
const plain: LinkFigures[] = [];
const tls: LinkFigures[] = [];
for (let i = 0; i < runs; i++) {
  plain.push(await measureLink(bytes, pings, false));
  tls.push(await measureLink(bytes, pings, true));
  process.stderr.write(`run ${i + 1}/${runs}: plain ${plain.at(-1)!.streamMBps.toFixed(0)} MB/s, TLS ${tls.at(-1)!.streamMBps.toFixed(0)} MB/s\n`);
}
const summary = (xs: LinkFigures[]) => ({ streamMBps: median(xs.map((x) => x.streamMBps)), rttP50Ms: median(xs.map((x) => x.rttMs.p50)), rttP99Ms: median(xs.map((x) => x.rttMs.p99)) });
const p = summary(plain);
const t = summary(tls);
// At 1 Gbit/s (125 MB/s) the link, not the CPU, limits a stream that runs faster than that
// with TLS: what TLS takes off such a link is what it takes below 125 MB/s.
const at1G = Math.max(0, (Math.min(125, p.streamMBps) - Math.min(125, t.streamMBps)) / Math.min(125, p.streamMBps));
const result = {
  machine: machineFacts(),
  runs,
  bytes,
  plain: p,
  tls: t,
  throughputCost: 1 - t.streamMBps / p.streamMBps,
  throughputCostAt1Gbit: at1G,
  rttCostMs: t.rttP50Ms - p.rttP50Ms,
};
if (values.json) console.log(JSON.stringify(result, null, 2));
else {
  console.log(describeMachine(result.machine).join("\n"));
  console.log(`| link (loopback, ${runs} runs each, medians) | stream MB/s | round trip p50 ms | p99 ms |`);
  console.log('|---|---:|---:|---:|');
  console.log(`| plain TCP | ${p.streamMBps.toFixed(0)} | ${p.rttP50Ms.toFixed(3)} | ${p.rttP99Ms.toFixed(3)} |`);
  console.log(`| TLS 1.3, PSK | ${t.streamMBps.toFixed(0)} | ${t.rttP50Ms.toFixed(3)} | ${t.rttP99Ms.toFixed(3)} |`);
  console.log(`TLS costs ${(result.throughputCost * 100).toFixed(1)}% of loopback throughput, ${(at1G * 100).toFixed(1)}% of a 1 Gbit/s link's (target ≤ 10%: ${at1G <= 0.1 ? 'met' : 'missed'}), ${(result.rttCostMs * 1000).toFixed(0)} µs per round trip (target ≤ 100 µs: ${result.rttCostMs <= 0.1 ? 'met' : 'missed'})`);
}
