/**
 * `postcopy migrate` measured against the targets, on this machine, in one run:
 * the loopback link first (stream throughput and round trip, link.ts), then migrations
 * through `postcopy migrate --demo --json` (two processes, real TCP): for each mode and
 * memory size, runs with the default switchover policy (downtime, guest-visible stall,
 * total time) and runs with --postcopy-now and a background stream limited to 32 MB/s
 * (most stale pages fetched in post-copy, vCPUs faulting on some: fault latency under the
 * background stream). Prints medians and each target's verdict.
 *
 *   npm run bench:migrate -- [--runs 3] [--sizes 1G,4G] [--now-up-to 1G] [--warmup 4s] [--guest kvm|threads] [--json]
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type { DestinationReport } from '../../src/apps/migrate/destination/destination.js';
import type { SourceReport } from '../../src/apps/migrate/source/source.js';
import { formatSize, parseSize } from '../../src/util/format.js';
import { describeMachine, machineFacts } from '../lib/machine.js';
import { measureLink } from './link.js';

/**
 * The background stream's limit in the post-copy runs: slow enough that the vCPUs come
 * round to stale pages while it still runs (at full speed it sends the stale pages
 * before a vCPU touches one), so that fault latency is measured under the stream.
 */
const NOW_BANDWIDTH = '32M';
const MAIN = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
const MODES = [
  { name: 'MINOR/shmem', args: ['-s', 'shmem', '-u', 'MINOR'] },
  { name: 'MISSING/anonymous', args: ['-s', 'anonymous', '-u', 'MISSING'] },
] as const;

interface Run {
  source: SourceReport;
  destination: DestinationReport;
}

function demo(args: string[]): Promise<Run> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [MAIN, 'migrate', '--demo', '--json', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.stderr.on('data', (d: Buffer) => (err += d.toString()));
    p.on('exit', (code) => {
      if (code !== 0) return reject(new Error(`postcopy migrate --demo ${args.join(' ')} exited ${code}: ${err.trim()}`));
      resolve(JSON.parse(out) as Run);
    });
  });
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor((s.length - 1) / 2)]! : NaN;
};
const f = (n: number, d = 1) => (Number.isFinite(n) ? n.toFixed(d) : 'n/a');

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { runs: { type: 'string' }, sizes: { type: 'string' }, 'now-up-to': { type: 'string' }, warmup: { type: 'string' }, guest: { type: 'string' }, json: { type: 'boolean' } } });
  const runs = Number(values.runs ?? 3);
  const sizes = (values.sizes ?? '1G,4G').split(',').map((s) => parseSize(s)!);
  // The post-copy runs stream at NOW_BANDWIDTH: at 4 GiB that is minutes per run, so only sizes up to this get them.
  const nowUpTo = parseSize(values['now-up-to'] ?? '1G')!;
  const log = (s: string) => process.stderr.write(`${s}\n`);
  const machine = machineFacts();
  for (const l of describeMachine(machine)) log(l);
  const link = await measureLink();
  log(`link: stream ${f(link.streamMBps)} MB/s, request→page round trip p50 ${f(link.rttMs.p50, 3)} ms, p99 ${f(link.rttMs.p99, 3)} ms`);
  const rows: Record<string, unknown>[] = [];
  for (const size of sizes) {
    for (const mode of MODES) {
      // --warmup: how long the guest runs before the migration starts; 500ms (the default)
      // leaves a part of shared memory never written (sent as zero runs), 4s writes it all.
      const base = [...mode.args, '-v', '2', '-b', String(size / 2), '--run-after', '500ms', ...(values.warmup ? ['--warmup', values.warmup] : []), ...(values.guest ? ['--guest', values.guest] : [])];
      const policy: Run[] = [];
      const now: Run[] = [];
      for (let i = 0; i < runs; i++) {
        policy.push(await demo(base));
        if (size <= nowUpTo) now.push(await demo([...base, '--postcopy-now', '--bandwidth', NOW_BANDWIDTH]));
        log(`${formatSize(size)} ${mode.name}: run ${i + 1}/${runs}`);
      }
      const all = [...policy, ...now];
      const lost = all.reduce((n, r) => n + r.destination.oracle.lostWrites + r.destination.oracle.guestMismatches, 0);
      const idealMs = (size / (link.streamMBps * 1e6)) * 1000;
      rows.push({
        size: formatSize(size),
        mode: mode.name,
        runs: all.length,
        lostWrites: lost,
        downtimeMs: median(policy.map((r) => r.destination.downtimeMs)),
        downtimeParts: {
          pauseMs: median(policy.map((r) => r.source.blackout.pauseMs)),
          stateMs: median(policy.map((r) => r.source.blackout.stateMs)),
          resumeMs: median(policy.map((r) => r.destination.resumeMs)),
        },
        stallMs: median(policy.map((r) => r.destination.guestStallMs)),
        preMigrationGapMs: median(policy.map((r) => Math.max(...r.source.states.map((s) => Number(s.maxGapTicks))) / r.source.tscKhz)),
        totalMs: median(policy.map((r) => r.source.totalMs)),
        totalOverIdeal: median(policy.map((r) => r.source.totalMs)) / idealMs,
        rounds: median(policy.map((r) => r.source.rounds.length)),
        firstRoundMBps: median(policy.map((r) => r.source.streamMBps)),
        postcopyNow: {
          downtimeMs: median(now.map((r) => r.destination.downtimeMs)),
          stallMs: median(now.map((r) => r.destination.guestStallMs)),
          totalMs: median(now.map((r) => r.source.totalMs)),
          stalePages: median(now.map((r) => r.destination.stalePages)),
          onDemandPages: median(now.map((r) => r.destination.onDemandPages)),
          latencyP50Ms: median(now.map((r) => r.destination.latencyMs.p50)),
          latencyP99Ms: median(now.map((r) => r.destination.latencyMs.p99)),
          p99OverRtt: median(now.map((r) => r.destination.latencyMs.p99)) / link.rttMs.p50,
        },
      });
    }
  }
  if (values.json) {
    console.log(JSON.stringify({ machine, link, rows }, null, 2));
    return;
  }
  console.log(`link: ${f(link.streamMBps)} MB/s; round trip p50 ${f(link.rttMs.p50, 3)} ms`);
  console.log('size   mode               runs lost  downtime (pause+state+resume)  stall  (pre-gap)  total ms  ×ideal rounds | now: downtime stall  total  stale  on-demand  p50 ms  p99 ms  p99/rtt');
  for (const r of rows as any[]) {
    const n = r.postcopyNow;
    console.log(
      [r.size.padEnd(6), r.mode.padEnd(18), String(r.runs).padStart(4), String(r.lostWrites).padStart(4), f(r.downtimeMs, 2).padStart(9), `(${f(r.downtimeParts.pauseMs, 1)}+${f(r.downtimeParts.stateMs, 1)}+${f(r.downtimeParts.resumeMs, 1)})`.padStart(20), f(r.stallMs, 2).padStart(6), `(${f(r.preMigrationGapMs, 2)})`.padStart(10),
        f(r.totalMs, 0).padStart(9), f(r.totalOverIdeal, 2).padStart(7), String(r.rounds).padStart(6), '|', f(n.downtimeMs, 2).padStart(8), f(n.stallMs, 2).padStart(6), f(n.totalMs, 0).padStart(6),
        String(n.stalePages).padStart(6), String(n.onDemandPages).padStart(10), f(n.latencyP50Ms, 2).padStart(7), f(n.latencyP99Ms, 2).padStart(7), f(n.p99OverRtt, 1).padStart(8)].join(' '),
    );
  }
}

await main();
