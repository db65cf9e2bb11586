/**
 * Fault round trips per second, TypeScript handler vs C handler (`npm run bench:uffd`).
 *
 * Runs roundtrip.c and the TypeScript equivalent (ts-run.ts) alternately, on fresh memory
 * every run, with the handler on the toucher's CPU and on another one; prints medians and
 * the ratio TS/C per placement, judged against the issue's targets. Compare figures only
 * within one invocation: machines of the same kind differ, and so does one machine from
 * minute to minute (see machine.ts). Ratios travel, absolute rates do not.
 *
 *   --rounds N           runs per implementation and row (default 9: this kind of machine is noisy)
 *   --size BYTES         region size per run, e.g. 64M (default 64M = 16384 pages)
 *   --wait poll,read     handler wait: poll+read (the kernel test's shape) and/or read only
 *   --placements same,split
 *   --toucher-cpu T      default 0; same = (T, T), split = (T, --other-cpu)
 *   --other-cpu H        default 1
 *   --json               one JSON document on stdout instead of the table
 */
import { parseArgs } from 'node:util';
import { formatSize, parseSize } from '../../src/util/format.js';
import { buildC, CFLAGS, runC } from './c-run.js';
import { machineFacts, OtherLoad, otherLoadOver, type MachineFacts } from '../lib/machine.js';
import { PAGE, type RunResult, type RunSpec, type WaitMode } from './protocol.js';
import { runTs } from './ts-run.js';

type Placement = 'same' | 'split';

/** A bad command line: reported as its message alone. */
class UsageError extends Error {}

/** The issue's targets for TS/C, per placement, for the poll+read shape (read only is an extra). */
const TARGET: Record<Placement, number> = { same: 0.95, split: 1.0 };

interface Row {
  wait: WaitMode;
  placement: Placement;
  toucherCpu: number;
  handlerCpu: number;
  c: number[];
  ts: number[];
}

interface RowSummary {
  wait: WaitMode;
  placement: Placement;
  toucherCpu: number;
  handlerCpu: number;
  c: Stats;
  ts: Stats;
  /**
   * TS/C: the median over rounds of each round's TS/C (the two ran back to back). The
   * verdict uses this: the machine's speed drifts over minutes, and pairing cancels that.
   */
  ratio: number;
  /** median(TS) / median(C), for comparison; it moves with drift between rounds. */
  ratioOfMedians: number;
  /** null for the extra read-only rows, which the targets do not cover. */
  target: number | null;
  met: boolean | null;
}

interface Stats {
  median: number;
  min: number;
  max: number;
  runs: number[];
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

function stats(runs: number[]): Stats {
  return { median: median(runs), min: Math.min(...runs), max: Math.max(...runs), runs };
}

function list<T extends string>(text: string, allowed: readonly T[], flag: string): T[] {
  const items = text.split(',').map((s) => s.trim());
  for (const item of items) {
    if (!(allowed as readonly string[]).includes(item)) throw new UsageError(`${flag}: '${item}' is not one of ${allowed.join(', ')}`);
  }
  return items as T[];
}

function cpuNumber(text: string, flag: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 0) throw new UsageError(`${flag}: '${text}' is not a CPU number`);
  return n;
}

function options() {
  let parsed;
  try {
    parsed = parseArgs({
      options: {
        rounds: { type: 'string', default: '9' },
        size: { type: 'string', default: '64M' },
        wait: { type: 'string', default: 'poll,read' },
        placements: { type: 'string', default: 'same,split' },
        'toucher-cpu': { type: 'string', default: '0' },
        'other-cpu': { type: 'string', default: '1' },
        json: { type: 'boolean', default: false },
      },
    });
  } catch (e) {
    throw new UsageError(e instanceof Error ? e.message : String(e));
  }
  const values = parsed.values;
  const rounds = Number(values.rounds);
  if (!Number.isInteger(rounds) || rounds < 1) throw new UsageError(`--rounds: '${values.rounds}' is not a positive integer`);
  const size = parseSize(values.size);
  if (size === undefined || size < PAGE || size % PAGE !== 0) throw new UsageError(`--size: '${values.size}' is not a positive multiple of ${PAGE}`);
  return {
    rounds,
    size,
    waits: list(values.wait, ['poll', 'read'] as const, '--wait'),
    placements: list(values.placements, ['same', 'split'] as const, '--placements'),
    toucherCpu: cpuNumber(values['toucher-cpu'], '--toucher-cpu'),
    otherCpu: cpuNumber(values['other-cpu'], '--other-cpu'),
    json: values.json,
  };
}

const percent = (x: number) => `${(x * 100).toFixed(0)}%`;
const group = (n: number) => Math.round(n).toLocaleString('en-US');
const micros = (faultsPerSec: number) => (1e6 / faultsPerSec).toFixed(1);

/** Above this share of the CPUs used by other processes, the figures are suspect. */
const BUSY_WARNING = 0.05;

function warnBusy(when: string, share: number): void {
  process.stderr.write(`warning: other processes used ${percent(share)} of the CPUs ${when} the runs; that skews round trips, rerun on a quiet machine\n`);
}

/** Other processes' share of all CPUs' time: in the second before the runs, and during them. */
interface Quiet {
  before: number;
  during: number;
}

function table(rows: RowSummary[], facts: MachineFacts, quiet: Quiet, o: ReturnType<typeof options>): string {
  const head = ['wait', 'placement', 'C faults/s (µs)', 'TS faults/s (µs)', 'TS/C paired', 'of medians', 'target'];
  const body = rows.map((r) => [
    r.wait === 'poll' ? 'poll+read' : 'read only',
    `${r.placement === 'same' ? 'same CPU' : 'split'} (T${r.toucherCpu} H${r.handlerCpu})`,
    `${group(r.c.median)} (${micros(r.c.median)})`,
    `${group(r.ts.median)} (${micros(r.ts.median)})`,
    r.ratio.toFixed(3),
    r.ratioOfMedians.toFixed(3),
    r.target === null ? '(extra row)' : `≥${r.target.toFixed(2)} ${r.met ? 'met' : 'MISSED'}`,
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (i >= 2 && i <= 5 ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join('  ').trimEnd();
  const halt = `kvm.halt_poll_ns=${facts.kvmHaltPollNs ?? 'absent'}, haltpoll.guest_halt_poll_ns=${facts.guestHaltPollNs ?? 'absent'}, cpuidle driver ${facts.cpuidleDriver ?? 'absent'}`;
  return [
    `Fault round trips: ${o.size / PAGE} pages (${formatSize(o.size)}) per run, ${o.rounds} rounds; medians, and µs per round trip`,
    'TS/C paired: the median of each round\'s TS/C (C and TS ran back to back); the verdict uses it',
    `${facts.cpuModel}, ${facts.cpus} CPUs, Linux ${facts.kernel}, Node ${facts.node}, ${facts.gcc}`,
    halt,
    `Other processes' share of the CPUs: ${percent(quiet.before)} just before the runs, ${percent(quiet.during)} during them`,
    '',
    line(head),
    ...body.map(line),
  ].join('\n');
}

async function main(): Promise<void> {
  const o = options();
  const facts = machineFacts();
  const placements = o.placements.filter((p) => {
    if (p === 'split' && (o.otherCpu >= facts.cpus || o.otherCpu === o.toucherCpu)) {
      process.stderr.write(`skipping split: CPU ${o.otherCpu} is not a second CPU on this machine (${facts.cpus} CPUs)\n`);
      return false;
    }
    return true;
  });
  if (buildC()) process.stderr.write(`built bench/out/roundtrip (gcc ${CFLAGS.join(' ')})\n`);
  const quiet: Quiet = { before: await otherLoadOver(1000), during: 0 };
  if (quiet.before > BUSY_WARNING) warnBusy('just before', quiet.before);
  const load = new OtherLoad();

  const pages = o.size / PAGE;
  const rows: Row[] = [];
  for (const wait of o.waits) {
    for (const placement of placements) {
      const handlerCpu = placement === 'same' ? o.toucherCpu : o.otherCpu;
      rows.push({ wait, placement, toucherCpu: o.toucherCpu, handlerCpu, c: [], ts: [] });
    }
  }

  const all: RunResult[] = [];
  let failed = 0;
  for (let round = 0; round < o.rounds; round++) {
    for (const row of rows) {
      const spec: RunSpec = { wait: row.wait, pages, toucherCpu: row.toucherCpu, handlerCpu: row.handlerCpu };
      // Alternate which goes first, so neither always runs on a machine the other just warmed.
      const order = round % 2 === 0 ? (['c', 'ts'] as const) : (['ts', 'c'] as const);
      for (const impl of order) {
        const r = impl === 'c' ? runC(spec) : await runTs(spec);
        all.push(r);
        if (!r.ok) failed++;
        row[impl].push(r.faultsPerSec);
        process.stderr.write(
          `round ${round + 1}/${o.rounds} ${row.wait} ${row.placement} ${impl.padEnd(2)} ${group(r.faultsPerSec)} faults/s` +
            `${r.ok ? '' : ` NOT OK (faults ${r.faults}, eexist ${r.eexist})`}\n`,
        );
      }
    }
  }

  quiet.during = load.share().others;
  if (quiet.during > BUSY_WARNING) warnBusy('during', quiet.during);

  const summaries: RowSummary[] = rows.map((row) => {
    const c = stats(row.c);
    const ts = stats(row.ts);
    const ratio = median(row.ts.map((t, i) => t / row.c[i]!));
    const target = row.wait === 'poll' ? TARGET[row.placement] : null;
    return {
      wait: row.wait,
      placement: row.placement,
      toucherCpu: row.toucherCpu,
      handlerCpu: row.handlerCpu,
      c,
      ts,
      ratio,
      ratioOfMedians: ts.median / c.median,
      target,
      met: target === null ? null : ratio >= target,
    };
  });

  if (o.json) {
    const command = ['node', ...process.argv.slice(1).map((a, i) => (i === 0 ? 'dist/bench/uffd-roundtrip/run.js' : a))].join(' ');
    process.stdout.write(JSON.stringify({ command, machine: facts, otherLoad: quiet, pages, rounds: o.rounds, rows: summaries, runs: all }, null, 2) + '\n');
  } else {
    process.stdout.write(table(summaries, facts, quiet, o) + '\n');
  }
  if (failed > 0) {
    process.stderr.write(`${failed} run(s) did not fault every page exactly once with the source's bytes\n`);
    process.exitCode = 1;
  }
}

main().catch((e: unknown) => {
  const text = e instanceof UsageError ? e.message : e instanceof Error ? (e.stack ?? e.message) : String(e);
  process.stderr.write(`bench:uffd: ${text}\n`);
  process.exit(e instanceof UsageError ? 2 : 1);
});
