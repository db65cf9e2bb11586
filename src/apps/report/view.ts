/**
 * What the report page shows, worked out here from the run files (rates from cumulative
 * counters, the timeline's bands, histogram bars), so that the page itself only draws.
 * Plain data: it goes into the page as JSON.
 */
import type { SeriesData } from '../../metrics/series.js';
import type { BenchJson, DestinationJson, LoadedRun, SourceJson } from './load.js';

/** A shaded span of a time chart: a precopy round, the blackout. */
export interface Band {
  readonly from: number;
  readonly to: number;
  readonly label: string;
  readonly kind: 'round' | 'blackout';
}

export interface ChartSpec {
  readonly id: string;
  readonly title: string;
  readonly xLabel: string;
  readonly yLabel: string;
  /** line: series over x; bars: one bar per x (labels in xNames). */
  readonly kind: 'line' | 'bars';
  readonly x: readonly number[];
  readonly xNames?: readonly string[];
  readonly series: readonly { readonly label: string; readonly values: readonly (number | null)[] }[];
  readonly yLog?: boolean;
  readonly bands?: readonly Band[];
  /** A sentence under the chart: what it shows and how it was measured. */
  readonly note?: string;
}

/** One number of the run, with where it is in the run's JSON (the browser test compares the two). */
export interface Figure {
  readonly label: string;
  readonly value: number;
  readonly unit: string;
  /** Path in the run file's JSON: `uffd.serviceNs.p99`. */
  readonly path: string;
  /** The value shown is the JSON's × scale (ns shown as µs: 1e-3). */
  readonly scale?: number;
}

export interface RunView {
  readonly id: string;
  readonly file: string;
  readonly title: string;
  readonly command: string;
  readonly machine: string;
  readonly at: string;
  readonly figures: readonly Figure[];
  readonly charts: readonly ChartSpec[];
  /** What could not be drawn, and why (a run recorded without series). */
  readonly missing: readonly string[];
}

export interface ReportView {
  readonly title: string;
  readonly runs: readonly RunView[];
  /** Charts across runs, when there are several. */
  readonly compare: readonly ChartSpec[];
}

const sec = (ms: number) => Math.round(ms) / 1000;

/** Per-second rates between consecutive samples of a cumulative column, at the later sample's time. */
function rates(s: SeriesData, column: number, scale = 1): (number | null)[] {
  const v = s.values[column]!;
  return s.t.map((t, i) => {
    if (i === 0) return null;
    const dt = (t - s.t[i - 1]!) / 1000;
    return dt > 0 ? Math.round(((v[i]! - v[i - 1]!) * scale) / dt) : null;
  });
}

/** Histogram bars of QEMU's log2 µs buckets; zero counts are gaps (a log axis has no 0). */
function log2Bars(id: string, title: string, counts: readonly number[], note: string): ChartSpec {
  // Each bar is named by its lower bound (the axis label says the bucket's span).
  const names = counts.map((_, n) => (n === 0 ? '<2 µs' : fmtUs(2 ** n)));
  return {
    id,
    title,
    kind: 'bars',
    xLabel: 'latency bucket [2^N, 2^(N+1)) µs',
    yLabel: 'faults (log scale)',
    x: counts.map((_, n) => n),
    xNames: names,
    series: [{ label: 'faults', values: counts.map((c) => (c > 0 ? c : null)) }],
    yLog: true,
    note,
  };
}

function fmtUs(us: number): string {
  if (us >= 1e6) return `${us / 1e6 >= 10 ? Math.round(us / 1e6) : (us / 1e6).toPrecision(2)} s`;
  if (us >= 1e3) return `${us / 1e3 >= 10 ? Math.round(us / 1e3) : (us / 1e3).toPrecision(2)} ms`;
  return `${us} µs`;
}

function machineLine(r: LoadedRun): string {
  const m = r.run.machine;
  return `${m.hostname}: ${m.cpuModel}, ${m.cpus} CPU(s), ${(m.memoryBytes / 2 ** 30).toFixed(1)} GiB, Linux ${m.kernel}, Node ${m.node}, ${m.kvm ? '/dev/kvm' : 'no /dev/kvm'}, load ${m.loadavg.join(' ')}`;
}

function benchView(r: LoadedRun & { kind: 'bench' }, id: string): RunView {
  const b: BenchJson = r.bench;
  const charts: ChartSpec[] = [];
  const missing: string[] = [];
  const s = b.series;
  const figures: Figure[] = [
    { label: 'total time', value: b.totalSeconds, unit: 's', path: 'totalSeconds' },
    { label: 'overall paging rate', value: b.overallRate, unit: 'pages/s', path: 'overallRate' },
    { label: 'per-vCPU paging rate', value: b.perVcpuRate, unit: 'pages/s/vCPU', path: 'perVcpuRate' },
    { label: 'pages per vCPU', value: b.pagesPerVcpu, unit: 'pages', path: 'pagesPerVcpu' },
    { label: 'pages that failed verification', value: b.mismatches, unit: '', path: 'mismatches' },
  ];
  if (b.uffd) {
    figures.push(
      { label: 'faults through userfaultfd', value: b.uffd.faults, unit: '', path: 'uffd.faults' },
      { label: 'fault service p50', value: b.uffd.serviceNs.p50, unit: 'µs', path: 'uffd.serviceNs.p50', scale: 1e-3 },
      { label: 'fault service p99', value: b.uffd.serviceNs.p99, unit: 'µs', path: 'uffd.serviceNs.p99', scale: 1e-3 },
      { label: 'fault service max', value: b.uffd.serviceNs.max, unit: 'µs', path: 'uffd.serviceNs.max', scale: 1e-3 },
    );
  }
  if (s && s.t.length > 1) {
    const start = s.events.find((e) => e.name === 'start')?.atMs ?? 0;
    const x = s.t.map((t) => sec(t - start));
    const vcpuCols = s.columns.map((c, i) => [c, i] as const).filter(([c]) => c.startsWith('pages.vcpu'));
    const faults = s.columns.indexOf('faults');
    const series = vcpuCols.map(([c, i]) => ({ label: `vCPU ${c.slice('pages.vcpu'.length)}`, values: rates(s, i) }));
    if (faults >= 0 && vcpuCols.length === 0) series.push({ label: 'faults resolved (all vCPUs)', values: rates(s, faults) });
    charts.push({
      id: `${id}-rate`,
      title: 'Paging rate per vCPU over time',
      kind: 'line',
      xLabel: 'time since the vCPUs started (s)',
      yLabel: 'pages/s',
      x,
      series,
      note: `Sampled every ${s.intervalMs} ms (${s.t.length} samples); ${vcpuCols.length ? (b.options.vcpuThreads ? "each toucher thread's own position" : "each vCPU's userfaultfd's resolved faults") : 'one userfaultfd for all vCPUs: the total only'}.`,
    });
  } else missing.push('paging rate over time: not recorded (run made with POSTCOPY_NO_SERIES=1, or without a series)');
  if (b.uffd?.serviceLog2Us && b.uffd.serviceLog2Us.length > 0) {
    charts.push(log2Bars(`${id}-latency`, 'Fault service latency (fault read → resolved)', b.uffd.serviceLog2Us, `${b.uffd.serviceNs.count} faults; QEMU's buckets: [2^N, 2^(N+1)) µs, under 1 µs in the first.`));
  } else if (b.uffd) missing.push('fault latency histogram: not in this file');
  const o = b.options;
  return {
    id,
    file: r.file,
    title: `bench: ${o.vcpus} vCPU(s) × ${(o.bytesPerVcpu / 2 ** 20).toFixed(0)} MiB of ${o.source}, ${o.mode ?? 'no userfaultfd'}, ${b.backend}`,
    command: r.run.command,
    machine: machineLine(r),
    at: r.run.at,
    figures,
    charts,
    missing,
  };
}

/** The source's and the destination's times on one axis: ms since the source's t0 (or the destination's alone). */
function offsets(src: SourceJson | undefined, dst: DestinationJson | undefined, sameMachine: boolean): { src: number; dst: number } {
  if (src?.series && dst?.series && sameMachine) return { src: 0, dst: Number(BigInt(dst.series.t0Ns) - BigInt(src.series.t0Ns)) / 1e6 };
  return { src: 0, dst: 0 };
}

function eventAt(s: SeriesData | null | undefined, name: string, shift: number): number | undefined {
  const e = s?.events.find((x) => x.name === name);
  return e ? e.atMs + shift : undefined;
}

function migrateView(r: LoadedRun & { kind: 'migrate' }, id: string): RunView {
  const src = r.source;
  const dst = r.destination;
  const sameMachine = r.run.kind === 'migrate-demo';
  const off = offsets(src, dst, sameMachine);
  const charts: ChartSpec[] = [];
  const missing: string[] = [];
  const prefix = r.run.kind === 'migrate-demo' ? { s: 'source.', d: 'destination.' } : { s: '', d: '' };
  const figures: Figure[] = [];
  const rounds = src?.rounds ?? dst?.rounds ?? [];
  if (src) {
    figures.push(
      { label: 'precopy rounds', value: src.rounds.length, unit: '', path: `${prefix.s}rounds.length` },
      { label: 'precopy', value: src.precopyMs, unit: 'ms', path: `${prefix.s}precopyMs` },
      { label: 'stale pages at the switchover', value: src.stalePages, unit: 'pages', path: `${prefix.s}stalePages` },
      { label: 'guest stopped (source)', value: src.blackout.pauseMs, unit: 'ms', path: `${prefix.s}blackout.pauseMs` },
      { label: 'total', value: src.totalMs, unit: 'ms', path: `${prefix.s}totalMs` },
    );
  }
  if (dst) {
    figures.push(
      { label: 'downtime (pause → resume)', value: dst.downtimeMs ?? NaN, unit: 'ms', path: `${prefix.d}downtimeMs` },
      { label: 'pages requested on demand', value: dst.onDemandPages, unit: 'pages', path: `${prefix.d}onDemandPages` },
      { label: 'pages from the background stream', value: dst.backgroundPages, unit: 'pages', path: `${prefix.d}backgroundPages` },
      { label: 'post-copy', value: dst.postcopyMs, unit: 'ms', path: `${prefix.d}postcopyMs` },
      { label: "longest guest stall", value: dst.guestStallMs ?? NaN, unit: 'ms', path: `${prefix.d}guestStallMs` },
      { label: 'lost writes (oracle)', value: dst.oracle.lostWrites, unit: '', path: `${prefix.d}oracle.lostWrites` },
    );
  } else if (src) figures.push({ label: 'downtime (pause → resume)', value: src.downtimeMs ?? NaN, unit: 'ms', path: `${prefix.s}downtimeMs` });

  // The bands: precopy rounds from the source's events, the blackout from the pause to the resume.
  const bands: Band[] = [];
  const ss = src?.series;
  if (ss) {
    for (const e of ss.events) {
      if (e.name !== 'round-start') continue;
      const end = ss.events.find((x) => x.name === 'round-end' && x.detail?.round === e.detail?.round);
      const pages = rounds.find((x) => x.round === e.detail?.round)?.pages;
      if (end) bands.push({ from: sec(e.atMs + off.src), to: sec(end.atMs + off.src), label: `round ${e.detail?.round}: ${pages ?? '?'} pages`, kind: 'round' });
    }
  }
  const pause = eventAt(ss, 'pause', off.src) ?? eventAt(dst?.series, 'state:switching', off.dst);
  const resume = eventAt(dst?.series, 'resume', off.dst) ?? eventAt(ss, 'state:postcopy', off.src);
  if (pause !== undefined && resume !== undefined) bands.push({ from: sec(pause), to: sec(resume), label: `blackout ${(resume - pause).toFixed(1)} ms`, kind: 'blackout' });

  // After COMPLETE the guest runs on alone (--run-after) and nothing moves: the charts end
  // a little after it.
  const complete = eventAt(dst?.series, 'complete', off.dst) ?? eventAt(ss, 'complete', off.src);
  const endMs = complete !== undefined ? complete + Math.max(50, 0.05 * complete) : Infinity;
  const clip = (x: SeriesData | null | undefined, shift: number): SeriesData | null | undefined => {
    if (!x || !Number.isFinite(endMs)) return x;
    const n = x.t.findIndex((t) => t + shift > endMs);
    if (n < 0) return x;
    const keep = Math.max(2, n + 1);
    return { ...x, t: x.t.slice(0, keep), values: x.values.map((v) => v.slice(0, keep)) };
  };
  const ds = clip(dst?.series, off.dst);
  const ssClipped = clip(ss, off.src);
  if (ds && ds.t.length > 1) {
    const col = (name: string) => ds.values[ds.columns.indexOf(name)] ?? [];
    charts.push({
      id: `${id}-timeline`,
      title: 'Migration timeline: pages in at the destination, by how they travelled',
      kind: 'line',
      xLabel: 'time (s)',
      yLabel: 'pages in (cumulative)',
      x: ds.t.map((t) => sec(t + off.dst)),
      series: [
        { label: 'precopy', values: col('pages.precopy') },
        { label: 'post-copy background', values: col('pages.background') },
        { label: 'post-copy on demand', values: col('pages.onDemand') },
      ],
      bands,
      note: `Shaded: precopy rounds (pages sent per round) and the blackout, to scale${sameMachine ? '; both sides on one clock (one machine)' : ''}. Sampled every ${ds.intervalMs} ms.`,
    });
    // Post-copy alone: requested vs background, from the resume on.
    const from = resume ?? 0;
    const idx = ds.t.map((t, i) => [t + off.dst, i] as const).filter(([t]) => t >= from - ds.intervalMs);
    if (idx.length > 1) {
      const bg = col('pages.background');
      const od = col('pages.onDemand');
      charts.push({
        id: `${id}-postcopy`,
        title: 'Post-copy: pages requested by faults vs the background stream',
        kind: 'line',
        xLabel: 'time since the guest resumed (ms)',
        yLabel: 'pages (cumulative)',
        x: idx.map(([t]) => Math.round((t - from) * 10) / 10),
        series: [
          { label: 'requested (on demand)', values: idx.map(([, i]) => od[i]!) },
          { label: 'background', values: idx.map(([, i]) => bg[i]!) },
        ],
        note: `${dst!.stalePages} stale pages; ${dst!.onDemandPages} asked for by a fault, ${dst!.backgroundPages} from the background stream.`,
      });
    }
  } else missing.push('migration timeline: the destination side was not recorded');
  const linkSeries = [ssClipped ? { s: ssClipped, col: 'link.sentBytes', label: 'source sent', shift: off.src } : undefined, ds ? { s: ds, col: 'link.receivedBytes', label: 'destination received', shift: off.dst } : undefined].filter((x) => x && x.s.columns.includes(x.col) && x.s.t.length > 1);
  if (linkSeries.length > 0) {
    // One x axis: the side with the most samples; the other is read at the nearest time.
    const base = linkSeries.reduce((a, b) => (b!.s.t.length > a!.s.t.length ? b : a))!;
    const x = base.s.t.map((t) => t + base.shift);
    charts.push({
      id: `${id}-link`,
      title: 'Link throughput',
      kind: 'line',
      xLabel: 'time (s)',
      yLabel: 'MB/s',
      x: x.map(sec),
      series: linkSeries.map((l) => {
        const r = rates(l!.s, l!.s.columns.indexOf(l!.col), 1e-6);
        const times = l!.s.t.map((t) => t + l!.shift);
        return { label: l!.label, values: x.map((t) => r[nearest(times, t)] ?? null) };
      }),
      bands,
    });
  }
  if (rounds.length > 0) {
    charts.push({
      id: `${id}-rounds`,
      title: 'Pages sent per precopy round',
      kind: 'bars',
      xLabel: 'precopy round',
      yLabel: 'pages',
      x: rounds.map((x) => x.round),
      xNames: rounds.map((x) => `round ${x.round}`),
      series: [{ label: 'pages', values: rounds.map((x) => x.pages) }],
    });
  }
  if (dst || src) {
    const names: string[] = [];
    const values: number[] = [];
    const add = (n: string, v: number | null | undefined) => {
      if (typeof v === 'number' && Number.isFinite(v)) (names.push(n), values.push(Math.round(v * 1000) / 1000));
    };
    add('downtime', dst?.downtimeMs ?? src?.downtimeMs);
    add('source: guest stopping', src?.blackout.pauseMs);
    add('source: state sent', src?.blackout.stateMs);
    add('destination: resume', dst?.resumeMs);
    add('longest guest stall', dst?.guestStallMs);
    if (names.length > 0) {
      charts.push({
        id: `${id}-blackout`,
        title: "The blackout and the guest's stall, to scale",
        kind: 'bars',
        xLabel: 'part',
        yLabel: 'ms',
        x: names.map((_, i) => i),
        xNames: names,
        series: [{ label: 'ms', values }],
        note: "Downtime: the source's pause to the destination's resume. Stall: the longest gap in the guest's own progress from the pause on (blackout, then waits for pages).",
      });
    }
  }
  const lat = dst?.latencyMs;
  if (lat && lat.count > 0 && lat.log2Us && lat.log2Us.length > 0) {
    charts.push(log2Bars(`${id}-latency`, 'Post-copy fault latency (fault read → page placed)', lat.log2Us, `${lat.count} faults waited on the network; p50 ${lat.p50.toFixed(2)} ms, p99 ${lat.p99.toFixed(2)} ms.`));
  } else if (dst) missing.push('post-copy fault latency: no fault waited on the network in this run');
  const g = dst ?? src!;
  const size = ((g.pages * g.unit) / 2 ** 20).toFixed(0);
  return {
    id,
    file: r.file,
    title: `migrate${r.run.kind === 'migrate-demo' ? ' --demo' : r.run.kind === 'migrate-send' ? ' send' : ' receive'}: ${size} MiB, ${g.guest} guest${dst ? `, ${dst.mode.toUpperCase()}` : ''}`,
    command: r.run.command,
    machine: machineLine(r),
    at: r.run.at,
    figures,
    charts,
    missing,
  };
}

function nearest(sorted: readonly number[], t: number): number {
  let lo = 0;
  let hi = sorted.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (sorted[mid]! < t) lo = mid + 1;
    else hi = mid;
  }
  return lo > 0 && Math.abs(sorted[lo - 1]! - t) < Math.abs(sorted[lo]! - t) ? lo - 1 : lo;
}

/** Bars across runs: bench runs' rates, migrations' downtime and total. */
function compareCharts(runs: readonly LoadedRun[], views: readonly RunView[]): ChartSpec[] {
  const charts: ChartSpec[] = [];
  const bench = runs.map((r, i) => [r, i] as const).filter(([r]) => r.kind === 'bench') as (readonly [LoadedRun & { kind: 'bench' }, number])[];
  if (bench.length > 1) {
    charts.push({
      id: 'compare-bench',
      title: 'Paging rate, run by run',
      kind: 'bars',
      xLabel: 'run',
      yLabel: 'pages/s',
      x: bench.map((_, i) => i),
      xNames: bench.map(([, i]) => `${i + 1}: ${views[i]!.title.replace(/^bench: /, '')}`),
      series: [
        { label: 'overall', values: bench.map(([r]) => Math.round(r.bench.overallRate)) },
        { label: 'per vCPU', values: bench.map(([r]) => Math.round(r.bench.perVcpuRate)) },
      ],
    });
  }
  const mig = runs.map((r, i) => [r, i] as const).filter(([r]) => r.kind === 'migrate') as (readonly [LoadedRun & { kind: 'migrate' }, number])[];
  if (mig.length > 1) {
    charts.push({
      id: 'compare-migrate',
      title: 'Migrations, run by run',
      kind: 'bars',
      xLabel: 'run',
      yLabel: 'ms',
      x: mig.map((_, i) => i),
      xNames: mig.map(([, i]) => `${i + 1}: ${views[i]!.title.replace(/^migrate[^:]*: /, '')}`),
      series: [
        { label: 'downtime', values: mig.map(([r]) => r.destination?.downtimeMs ?? r.source?.downtimeMs ?? null) },
        { label: 'post-copy', values: mig.map(([r]) => r.destination?.postcopyMs ?? null) },
        { label: 'longest guest stall', values: mig.map(([r]) => r.destination?.guestStallMs ?? null) },
      ],
    });
  }
  return charts;
}

export function reportView(runs: readonly LoadedRun[]): ReportView {
  const views = runs.map((r, i) => (r.kind === 'bench' ? benchView(r, `run${i + 1}`) : migrateView(r, `run${i + 1}`)));
  return {
    title: runs.length === 1 ? `postcopy report: ${views[0]!.title}` : `postcopy report: ${runs.length} runs`,
    runs: views,
    compare: compareCharts(runs, views),
  };
}
