/**
 * uffd-wp dirty tracking against its targets and against the C prototype it follows
 * (`npm run bench:tracking`). In one run, rounds alternate the TypeScript tracker and the
 * prototype (shared/prototypes/uffd-wp, built with its build.sh into bench/out/):
 *
 * - the first write to a page after a collection (the collection re-protected it), per
 *   page, against a plain first-touch fault of fresh anonymous memory: target ≤ 1.5×;
 * - one collection of a clean 1 GiB range, anonymous and shmem: target ≤ 0.5 ms;
 * - each beside the prototype's figure for the same thing: target ≤ 1.2×.
 *
 * Figures are medians over rounds; TS/C ratios are medians of each round's ratio (the two
 * ran back to back, which cancels the machine's drift). Ratios travel, absolute costs do
 * not: on a VM with paravirtual paging a fault costs 10-20× bare metal.
 *
 *   --rounds N         rounds (default 3)
 *   --write-size SIZE  range for the first-write sweeps (default 64M)
 *   --scan-size SIZE   range for the clean collections (default 1G)
 *   --collections N    clean collections timed per round (default 21; their median is the round's figure)
 *   --prototype DIR    the C prototype's sources (default /work/shared/prototypes/uffd-wp)
 *   --no-c             TypeScript only
 *   --json             one JSON document instead of the table
 */
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readdirSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Backing } from '../../src/memory/backing.js';
import { UffdWpTracker } from '../../src/tracking/uffd-wp.js';
import { formatSize, parseSize } from '../../src/util/format.js';
import { describeMachine, machineFacts, OtherLoad } from '../lib/machine.js';

const PAGE = 4096;
type Source = 'anonymous' | 'shmem';
const SOURCES: readonly Source[] = ['anonymous', 'shmem'];
const C_NAME: Record<Source, string> = { anonymous: 'anon', shmem: 'shmem' };

class UsageError extends Error {}

function options() {
  let values;
  try {
    values = parseArgs({
      options: {
        rounds: { type: 'string', default: '3' },
        'write-size': { type: 'string', default: '64M' },
        'scan-size': { type: 'string', default: '1G' },
        collections: { type: 'string', default: '21' },
        prototype: { type: 'string', default: '/work/shared/prototypes/uffd-wp' },
        'no-c': { type: 'boolean', default: false },
        json: { type: 'boolean', default: false },
      },
    }).values;
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const count = (flag: string, text: string) => {
    const n = Number(text);
    if (!Number.isInteger(n) || n < 1) throw new UsageError(`--${flag}: '${text}' is not a positive integer`);
    return n;
  };
  const size = (flag: string, text: string) => {
    const n = parseSize(text);
    // The prototype takes sizes in MiB.
    if (n === undefined || n < 2 ** 20 || n % 2 ** 20 !== 0) throw new UsageError(`--${flag}: '${text}' is not a positive whole number of MiB`);
    return n;
  };
  return {
    rounds: count('rounds', values.rounds),
    writeSize: size('write-size', values['write-size']),
    scanSize: size('scan-size', values['scan-size']),
    collections: count('collections', values.collections),
    prototype: values.prototype,
    c: !values['no-c'],
    json: values.json,
  };
}
type Options = ReturnType<typeof options>;

// ---------------------------------------------------------------- the TypeScript side

const now = () => Number(process.hrtime.bigint());

/** Writes one byte into every page of `bytes`; ns per page. */
function sweep(bytes: Uint8Array, value: number): number {
  const t0 = now();
  for (let off = 0; off < bytes.length; off += PAGE) bytes[off] = value;
  return (now() - t0) / (bytes.length / PAGE);
}

function track(b: Backing): UffdWpTracker {
  return UffdWpTracker.start({ address: b.primary.address, size: b.size, pageSize: b.info.pageSize });
}

/** A plain first-touch write fault: fresh memory, no userfaultfd. ns/page. */
function tsFirstTouch(source: Source, size: number): number {
  const b = Backing.create(source, size);
  try {
    return sweep(b.primary.bytes(), 1);
  } finally {
    b.close();
  }
}

/**
 * Populated memory, tracked, every page written, then collected (which re-protects them
 * all): the cost of that collection (ms/GiB), and of the first write to each page after
 * it (ns/page).
 */
function tsFirstWrite(source: Source, size: number): { firstWriteNs: number; allDirtyMsPerGiB: number } {
  const b = Backing.create(source, size);
  try {
    const bytes = b.primary.bytes();
    sweep(bytes, 1);
    const t = track(b);
    try {
      t.collect();
      sweep(bytes, 2);
      const t0 = now();
      t.collect();
      const allDirtyMsPerGiB = (now() - t0) / 1e6 / (size / 2 ** 30);
      return { firstWriteNs: sweep(bytes, 3), allDirtyMsPerGiB };
    } finally {
      t.close();
    }
  } finally {
    b.close();
  }
}

/** Populated memory, tracked, collected twice; then `n` collections with nothing written: their median, µs. */
function tsCleanCollect(source: Source, size: number, n: number): number {
  const b = Backing.create(source, size);
  try {
    sweep(b.primary.bytes(), 1);
    const t = track(b);
    try {
      t.collect();
      t.collect();
      const us: number[] = [];
      for (let i = 0; i < n; i++) {
        const t0 = now();
        t.collect();
        us.push((now() - t0) / 1e3);
      }
      return median(us);
    } finally {
      t.close();
    }
  } finally {
    b.close();
  }
}

// ---------------------------------------------------------------- the C prototype

const root = new URL('../../../', import.meta.url); // dist/bench/tracking/run.js -> package root
const OUT = fileURLToPath(new URL('bench/out/uffd-wp-prototype/', root));

/** Copies the prototype's sources into bench/out/ and builds them there with its build.sh; the reason when that fails. */
function buildPrototype(from: string): string | undefined {
  try {
    if (!existsSync(`${from}/build.sh`)) return `no build.sh in ${from}`;
    mkdirSync(OUT, { recursive: true });
    let stale = !existsSync(`${OUT}wpbench`);
    for (const f of readdirSync(from)) {
      if (!/\.(c|h|sh)$/.test(f)) continue;
      if (!existsSync(OUT + f) || statSync(`${from}/${f}`).mtimeMs > statSync(OUT + f).mtimeMs) stale = true;
      copyFileSync(`${from}/${f}`, OUT + f);
    }
    if (stale) execFileSync('sh', [`${OUT}build.sh`], { stdio: ['ignore', 'ignore', 'pipe'] });
    return undefined;
  } catch (e) {
    const err = e as { stderr?: Buffer; message: string };
    return `the C prototype did not build: ${err.stderr?.toString().trim() || err.message}`;
  }
}

/** Runs wpbench and returns its `R` lines' medians by key. */
function wpbench(source: Source, mib: number, section: string): Map<string, number> {
  const out = execFileSync(`${OUT}wpbench`, [C_NAME[source], String(mib), section, '1'], { encoding: 'utf8', maxBuffer: 1 << 24 });
  const figures = new Map<string, number>();
  for (const line of out.split('\n')) {
    const m = /^R \S+ size_mib \d+ (.+) med=([\d.]+) /.exec(line);
    if (m) figures.set(m[1]!, Number(m[2]));
  }
  return figures;
}

function figure(figures: Map<string, number>, key: string): number {
  const v = figures.get(key);
  if (v === undefined) throw new Error(`wpbench printed no '${key}'`);
  return v;
}

// ---------------------------------------------------------------- rounds and the table

interface Round {
  /** ns/page */
  tsTouch: Record<Source, number>;
  tsFirstWrite: Record<Source, number>;
  tsAllDirty: Record<Source, number>;
  /** µs */
  tsClean: Record<Source, number>;
  cTouch?: Record<Source, number>;
  cFirstWrite?: Record<Source, number>;
  cAllDirty?: Record<Source, number>;
  cClean?: Record<Source, number>;
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

function runRound(o: Options, withC: boolean, cFirst: boolean): Round {
  const r = { tsTouch: {}, tsFirstWrite: {}, tsAllDirty: {}, tsClean: {} } as Round;
  const c = () => {
    if (!withC) return;
    r.cTouch ??= {} as Record<Source, number>;
    r.cFirstWrite ??= {} as Record<Source, number>;
    r.cAllDirty ??= {} as Record<Source, number>;
    r.cClean ??= {} as Record<Source, number>;
    for (const s of SOURCES) {
      const fw = wpbench(s, o.writeSize / 2 ** 20, 'fw');
      r.cTouch[s] = figure(fw, 'populate first-touch ns/page');
      r.cFirstWrite[s] = figure(fw, 'async first-write 1thr ns/page');
      r.cAllDirty[s] = figure(fw, 'PAGEMAP_SCAN WP all-dirty ms/GiB');
      r.cClean[s] = figure(wpbench(s, o.scanSize / 2 ** 20, 'scan'), 'scan[0] WP_MATCHING us');
    }
  };
  const ts = () => {
    for (const s of SOURCES) {
      r.tsTouch[s] = tsFirstTouch(s, o.writeSize);
      const fw = tsFirstWrite(s, o.writeSize);
      r.tsFirstWrite[s] = fw.firstWriteNs;
      r.tsAllDirty[s] = fw.allDirtyMsPerGiB;
      r.tsClean[s] = tsCleanCollect(s, o.scanSize, o.collections);
    }
  };
  if (cFirst) {
    c();
    ts();
  } else {
    ts();
    c();
  }
  return r;
}

interface Row {
  what: string;
  unit: string;
  ts: number;
  tsRange: [number, number];
  c: number | null;
  /** Median over rounds of each round's TS/C. */
  tsOverC: number | null;
  target: string;
  met: boolean | null;
}

function rows(rounds: Round[], scanSize: number): Row[] {
  const out: Row[] = [];
  const pick = (f: (r: Round) => number | undefined) => rounds.map(f).filter((v): v is number => v !== undefined);
  const add = (what: string, unit: string, ts: (r: Round) => number, c: ((r: Round) => number | undefined) | null, target: string, met: (tsMedian: number, ratio: number | null) => boolean | null) => {
    const tsv = pick(ts);
    const cv = c ? pick(c) : [];
    const ratios = c ? rounds.filter((r) => c(r) !== undefined).map((r) => ts(r) / c(r)!) : [];
    const ratio = ratios.length ? median(ratios) : null;
    const m = median(tsv);
    // A ratio row's C column is the prototype's own ratio; a ratio of ratios would say nothing.
    const paired = unit === '×' ? null : ratio;
    out.push({ what, unit, ts: m, tsRange: [Math.min(...tsv), Math.max(...tsv)], c: cv.length ? median(cv) : null, tsOverC: paired, target, met: met(m, ratio) });
  };
  const within = (limit: number) => (_: number, ratio: number | null) => (ratio === null ? null : ratio <= limit);
  for (const s of SOURCES) {
    add(`plain first-touch fault, fresh ${s}`, 'µs/page', (r) => r.tsTouch[s] / 1e3, (r) => r.cTouch && r.cTouch[s] / 1e3, s === 'anonymous' ? 'the baseline' : 'for reference', () => null);
  }
  for (const s of SOURCES) {
    add(
      `first write after a collection, ${s}`,
      'µs/page',
      (r) => r.tsFirstWrite[s] / 1e3,
      (r) => r.cFirstWrite && r.cFirstWrite[s] / 1e3,
      '≤ 1.2× C',
      within(1.2),
    );
    // The same figure over this round's plain first-touch of fresh anonymous memory.
    add(
      `  ÷ plain first-touch (anonymous), same round`,
      '×',
      (r) => r.tsFirstWrite[s] / r.tsTouch.anonymous,
      (r) => r.cFirstWrite && r.cTouch && r.cFirstWrite[s] / r.cTouch.anonymous,
      '≤ 1.5×',
      (m) => m <= 1.5,
    );
  }
  for (const s of SOURCES) {
    add(`collection of ${formatSize(scanSize)}, clean, ${s}`, 'µs', (r) => r.tsClean[s], (r) => r.cClean?.[s], '≤ 500 µs; ≤ 1.2× C', (m, ratio) => m <= 500 && (ratio === null || ratio <= 1.2));
  }
  for (const s of SOURCES) {
    add(`collection, every page written, ${s}`, 'ms/GiB', (r) => r.tsAllDirty[s], (r) => r.cAllDirty?.[s], 'for reference', () => null);
  }
  return out;
}

const fmt = (v: number) => (v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2));

function table(rs: Row[], rounds: number): string {
  const head = ['', 'TypeScript median [min–max]', 'C prototype', 'TS/C paired', 'target', 'verdict'];
  const body = rs.map((r) => [
    r.what,
    `${fmt(r.ts)} [${fmt(r.tsRange[0])}–${fmt(r.tsRange[1])}] ${r.unit}`,
    r.c === null ? '–' : `${fmt(r.c)} ${r.unit}`,
    r.tsOverC === null ? '–' : r.tsOverC.toFixed(2),
    r.target,
    r.met === null ? '' : r.met ? 'met' : 'MISSED',
  ]);
  const lines = [head, ...body].map((cells) => `| ${cells.join(' | ')} |`);
  lines.splice(1, 0, `|${head.map(() => '---').join('|')}|`);
  return `${lines.join('\n')}\n(${rounds} round(s); medians over rounds)`;
}

async function main(): Promise<void> {
  const o = options();
  const facts = machineFacts();
  const cProblem = o.c ? buildPrototype(o.prototype) : 'not run (--no-c)';
  if (cProblem && o.c) process.stderr.write(`${cProblem}; going on without the C figures\n`);
  const load = new OtherLoad();
  const rounds: Round[] = [];
  for (let i = 0; i < o.rounds; i++) {
    if (!o.json) process.stderr.write(`round ${i + 1}/${o.rounds}...\n`);
    rounds.push(runRound(o, cProblem === undefined, i % 2 === 1));
  }
  const share = load.share();
  const result = rows(rounds, o.scanSize);
  if (o.json) {
    process.stdout.write(`${JSON.stringify({ machine: facts, options: o, cPrototype: cProblem ?? 'built', otherLoad: share, rows: result, rounds }, null, 2)}\n`);
    return;
  }
  const lines = [
    'uffd-wp dirty tracking (TypeScript) against its targets and the C prototype',
    ...describeMachine(facts),
    `first writes over ${formatSize(o.writeSize)}; clean collections of ${formatSize(o.scanSize)}, median of ${o.collections} per round; C prototype: ${cProblem ?? `built in ${OUT}`}`,
    `other processes used ${(share.others * 100).toFixed(0)}% of the CPUs during the runs (steal ${(share.steal * 100).toFixed(0)}%)`,
    '',
    table(result, o.rounds),
    '',
    'C prototype figures: wpbench fw (populate first-touch; async first-write after UFFDIO_WRITEPROTECT, the state a collection leaves)',
    'and wpbench scan (scan[0] WP_MATCHING: one PAGEMAP_SCAN of the clean range); one wpbench process per figure set and round.',
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
}

main().catch((e: unknown) => {
  process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n`);
  process.exitCode = e instanceof UsageError ? 2 : 1;
});
