/**
 * Post-copy recovery measured: migrations through a relay on loopback (bench/lib/cut-relay.ts)
 * whose link is cut at random moments of post-copy (and of precopy), each cut lasting a
 * random 0.5–5 s; for every cut, how long after the link returned the migration was
 * running again (the destination's "post-copy resumed" line), and for every run the
 * oracle's verdict. The source's reconnect backoff (100 ms doubling to 500 ms) bounds the
 * first; `postcopy migrate recover PID` at the moment the link returns removes it, which
 * `--recover-now` does.
 *
 *   npm run bench:recovery -- [--cuts 20] [--precopy-cuts 10] [--guest threads] [--recover-now] [--json]
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import type { DestinationReport } from '../../src/apps/migrate/destination/destination.js';
import { postcopy } from '../../test/helpers/processes.js';
import { describeMachine, machineFacts } from '../lib/machine.js';
import { CutRelay } from '../lib/cut-relay.js';

const { values } = parseArgs({ options: { cuts: { type: 'string' }, 'precopy-cuts': { type: 'string' }, guest: { type: 'string' }, 'recover-now': { type: 'boolean' }, json: { type: 'boolean' } } });
const cuts = Number(values.cuts ?? 20);
const precopyCuts = Number(values['precopy-cuts'] ?? 10);
const guest = values.guest ?? 'threads';
const rand = (lo: number, hi: number) => lo + Math.random() * (hi - lo);

interface CutResult {
  readonly outageMs: number;
  /** Link back → destination resumed post-copy. */
  readonly recoveredAfterMs: number;
}

async function postcopyRun(): Promise<{ cut: CutResult; lostWrites: number; checkedPages: number }> {
  const common = ['--json', '--timeout', '2s', '--recover-timeout', '30s', '--guest', guest];
  const dst = postcopy(['migrate', 'receive', '--listen', '127.0.0.1:0', '--run-after', '200ms', ...common]);
  const port = Number((await dst.waitFor(/listening on 127\.0\.0\.1:(\d+)/))[1]);
  const relay = await CutRelay.start(port);
  const src = postcopy(['migrate', 'send', '--connect', `127.0.0.1:${relay.port}`, '-s', 'shmem', '-b', '64M', '-v', '2', '--postcopy-now', '--bandwidth', '8M', '--warmup', '100ms', ...common]);
  try {
    await dst.waitFor(/resumed: \d+ stale/);
    await sleep(rand(100, 3000));
    relay.cut();
    const outageMs = rand(500, 5000);
    await sleep(outageMs);
    relay.restore();
    const back = performance.now();
    if (values['recover-now']) postcopy(['migrate', 'recover', String(src.process.pid)]);
    await dst.waitFor(/post-copy resumed after/, 60_000);
    const recoveredAfterMs = performance.now() - back;
    const [s, d] = await Promise.all([src.exited(), dst.exited()]);
    if (s !== 0 || d !== 0) throw new Error(`a run failed: source ${s}, destination ${d}\n${src.stderr()}\n${dst.stderr()}`);
    const report = JSON.parse(dst.stdout()) as DestinationReport;
    return { cut: { outageMs, recoveredAfterMs }, lostWrites: report.oracle.lostWrites + report.oracle.guestMismatches, checkedPages: report.oracle.checkedPages };
  } finally {
    relay.close();
    src.process.kill('SIGKILL');
    dst.process.kill('SIGKILL');
  }
}

async function precopyRun(): Promise<{ sourceRanOn: boolean; destinationFailed: boolean }> {
  const common = ['--timeout', '2s', '--guest', guest];
  const dst = postcopy(['migrate', 'receive', '--listen', '127.0.0.1:0', ...common]);
  const port = Number((await dst.waitFor(/listening on 127\.0\.0\.1:(\d+)/))[1]);
  const relay = await CutRelay.start(port);
  const src = postcopy(['migrate', 'send', '--connect', `127.0.0.1:${relay.port}`, '-s', 'shmem', '-b', '64M', '-v', '2', '--keep-precopy', '--max-rounds', '1000', '--max-stale', '0', '--postcopy-after', '60s', ...common]);
  try {
    await dst.waitFor(/accepted /);
    // Past the handshake, into the rounds.
    await sleep(rand(400, 2000));
    relay.cut();
    const [s, d] = await Promise.all([src.exited(), dst.exited()]);
    return { sourceRanOn: s === 1 && /the guest ran on here after the failure, and its memory checks clean/.test(src.stderr()), destinationFailed: d !== 0 };
  } finally {
    relay.close();
  }
}

const post: Awaited<ReturnType<typeof postcopyRun>>[] = [];
for (let i = 0; i < cuts; i++) {
  post.push(await postcopyRun());
  const r = post.at(-1)!;
  process.stderr.write(`post-copy cut ${i + 1}/${cuts}: ${r.cut.outageMs.toFixed(0)} ms down, running again ${r.cut.recoveredAfterMs.toFixed(0)} ms after it came back, ${r.lostWrites} lost\n`);
}
const pre: Awaited<ReturnType<typeof precopyRun>>[] = [];
for (let i = 0; i < precopyCuts; i++) {
  pre.push(await precopyRun());
  process.stderr.write(`precopy cut ${i + 1}/${precopyCuts}: source guest ran on: ${pre.at(-1)!.sourceRanOn}\n`);
}
const after = post.map((r) => r.cut.recoveredAfterMs).sort((a, b) => a - b);
const pct = (q: number) => after[Math.min(after.length - 1, Math.floor(q * after.length))] ?? NaN;
const result = {
  machine: machineFacts(),
  guest,
  recoverNow: values['recover-now'] ?? false,
  postcopyCuts: cuts,
  completed: post.length,
  lostWrites: post.reduce((n, r) => n + r.lostWrites, 0),
  recoveredAfterMs: { p50: pct(0.5), p90: pct(0.9), max: after.at(-1) ?? NaN },
  within1s: after.filter((x) => x <= 1000).length,
  precopyCuts,
  precopySourceRanOn: pre.filter((r) => r.sourceRanOn).length,
  precopyDestinationFailed: pre.filter((r) => r.destinationFailed).length,
};
if (values.json) console.log(JSON.stringify(result, null, 2));
else {
  console.log(describeMachine(result.machine).join('\n'));
  console.log(`post-copy: ${result.completed}/${cuts} migrations completed after a cut of 0.5–5 s, ${result.lostWrites} lost writes in all`);
  console.log(`running again after the link returned: p50 ${result.recoveredAfterMs.p50.toFixed(0)} ms, p90 ${result.recoveredAfterMs.p90.toFixed(0)} ms, max ${result.recoveredAfterMs.max.toFixed(0)} ms; ${result.within1s}/${cuts} within 1 s`);
  console.log(`precopy: ${result.precopySourceRanOn}/${precopyCuts} cuts left the source's guest running (checked clean), ${result.precopyDestinationFailed}/${precopyCuts} destinations discarded and failed`);
}
