/**
 * `postcopy bench` against the kernel's own demand_paging_test (Linux 6.12), on the same
 * configurations, run alternately (kernel, postcopy; next round postcopy, kernel; ...) so
 * that drift on a noisy machine falls on both. Prints per configuration the median
 * "Overall demand paging rate" of each, the ratio postcopy/kernel, and the no-userfaultfd
 * limit (the kernel test without -u on the same memory), with this machine's halt polling.
 *
 *   npm run bench:compare -- [options]
 *   node dist/bench/compare/run.js [options]
 *
 *   --rounds N         runs of each program per configuration (default 5)
 *   --quick            a small set (~1-2 min at 5 rounds) instead of the default set
 *   --config "FLAGS"   a configuration in the kernel test's flags, e.g. "-u MINOR -s shmem -b 64M -v 2 -a";
 *                      repeatable; replaces the default set (adds to --quick's)
 *   --kernel-only      run only the kernel test (when postcopy bench is not built, or to calibrate)
 *   --no-limit         skip the no-userfaultfd rows
 *   --list             print the configurations and exit
 *   --json             one JSON document on stdout instead of the table
 *   --kernel PATH      the kernel test binary (default bench/out/demand_paging_test, built by
 *                      bench/compare/build-kernel-test.sh when missing)
 *   --no-build         do not run the build script when the kernel test is missing
 *   --postcopy PATH    postcopy's CLI entry (default dist/src/cli/main.js), run as: node PATH bench FLAGS
 *   --timeout S        seconds before one run is killed (default 600)
 *
 * Exit status: 0 all runs succeeded; 1 some run failed (see the table's notes);
 * 2 usage error; 3 a program is missing (the message says how to get it).
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { type Config, ConfigError, defaultConfigs, hugetlbPageSize, limitOf, notesFor, parseConfig, quickConfigs } from './configs.js';
import { HugePagePools, defaultHugePageSize, hugePagesNeeded } from './hugepages.js';
import { type MachineFacts, OtherLoad, describeMachine, machineFacts } from '../lib/machine.js';
import { type Figures, parseOutput, shapeDifferences } from './output.js';

// dist/bench/compare/run.js -> the package root
const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const DEFAULT_KERNEL = `${ROOT}bench/out/demand_paging_test`;
const BUILD_SCRIPT = `${ROOT}bench/compare/build-kernel-test.sh`;
const DEFAULT_POSTCOPY = `${ROOT}dist/src/cli/main.js`;

type Program = 'kernel' | 'postcopy';

interface RunRecord extends Figures {
  round: number;
}

interface Side {
  runs: RunRecord[];
  failures: string[];
  median: number | null;
  min: number | null;
  max: number | null;
}

interface Row {
  kind: 'uffd' | 'limit';
  config: Config;
  /** For uffd rows: the no-uffd row of the same memory. */
  limit: Row | null;
  notes: string[];
  skipped: string | null;
  kernel: Side;
  postcopy: Side | null;
  /** postcopy's stdout lines whose shape differs from the kernel's (first pair of successful runs). */
  lineDifferences: string[] | null;
  formatProblems: Set<string>;
  kernelStdout: string | null;
  postcopyStdout: string | null;
}

class UsageError extends Error {}
class MissingError extends Error {}

function newSide(): Side {
  return { runs: [], failures: [], median: null, min: null, max: null };
}

function median(xs: readonly number[]): number | null {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

function summarize(side: Side): void {
  const xs = side.runs.map((r) => r.overall);
  side.median = median(xs);
  side.min = xs.length ? Math.min(...xs) : null;
  side.max = xs.length ? Math.max(...xs) : null;
}

// ---------------------------------------------------------------------------------------
// Running one program once

interface Outcome {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

let current: ReturnType<typeof spawn> | null = null;

function runOnce(cmd: string, args: string[], timeoutMs: number): Promise<Outcome> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    current = child;
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      current = null;
      reject(e);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      current = null;
      resolve({ code, signal, stdout, stderr, timedOut });
    });
  });
}

function failureText(o: Outcome): string {
  // The kernel's TEST_ASSERT prints a header, file:line: expression, pid, a backtrace, then
  // the message: keep the expression and the message.
  const lines = (o.stderr.trim() || o.stdout.trim())
    .split('\n')
    .filter((l) => !/^\s+\d+\t0x[0-9a-f]+: /.test(l) && !/^\s+pid=\d+ tid=\d+/.test(l) && !l.startsWith('==== Test Assertion Failure'))
    .map((l) => l.trim())
    .filter((l) => l.length > 0);
  const tail = lines.slice(-3).join(' | ');
  const how = o.timedOut ? 'timed out' : o.signal ? `killed by ${o.signal}` : `exit ${o.code}`;
  return tail ? `${how}: ${tail}` : how;
}

// ---------------------------------------------------------------------------------------
// The programs

/** A path as the user would type it: relative when under the current directory. */
function shown(path: string): string {
  const rel = relative(process.cwd(), path);
  return rel && !rel.startsWith('..') ? rel : path;
}

function probePostcopy(mainJs: string): string | null {
  const rel = shown(mainJs);
  if (!existsSync(mainJs)) {
    return `${rel} does not exist: build postcopy first (npm run build), or pass --kernel-only to run the kernel test alone`;
  }
  const r = spawnSync(process.execPath, [mainJs, 'bench', '--help'], { encoding: 'utf8', timeout: 30_000 });
  if (r.status !== 0) {
    const why = (r.stderr || r.stdout || '').trim().split('\n')[0] ?? '';
    return `\`node ${rel} bench --help\` failed (exit ${r.status}${why ? `: ${why}` : ''}): postcopy bench is not there yet; pass --kernel-only to run the kernel test alone`;
  }
  return null;
}

/**
 * What postcopy bench runs its "vCPUs" on, from one tiny `--json` run: 'kvm' is a real guest,
 * anything else (e.g. 'threads') is not comparable with the kernel test. null: not reported.
 */
function postcopyBackend(mainJs: string): string | null {
  const r = spawnSync(process.execPath, [mainJs, 'bench', '-b', '4M', '--json'], { encoding: 'utf8', timeout: 60_000 });
  try {
    const doc = JSON.parse(r.stdout) as { backend?: unknown };
    return typeof doc.backend === 'string' ? doc.backend : null;
  } catch {
    return null;
  }
}

function ensureKernelTest(path: string, explicit: boolean, build: boolean): void {
  if (existsSync(path)) return;
  if (explicit || !build) {
    throw new MissingError(`kernel test ${path} does not exist; build it with: bash ${shown(BUILD_SCRIPT)}`);
  }
  process.stderr.write(`compare: ${shown(path)} is missing; building it (bash ${shown(BUILD_SCRIPT)})\n`);
  const r = spawnSync('bash', [BUILD_SCRIPT], { stdio: ['ignore', 2, 2] });
  if (r.status !== 0 || !existsSync(path)) {
    throw new MissingError(`building the kernel test failed (exit ${r.status}); see the messages above`);
  }
}

/** "6.12.57" from the extracted tree's Makefile, and the Debian package version, when known. */
function kernelTestVersion(): { source: string | null; package: string | null } {
  let source: string | null = null;
  try {
    const mk = readFileSync(`${ROOT}bench/out/linux-6.12/Makefile`, 'utf8');
    const get = (k: string) => new RegExp(`^${k} = (\\S*)`, 'm').exec(mk)?.[1];
    source = [get('VERSION'), get('PATCHLEVEL'), get('SUBLEVEL')].filter((x) => x !== undefined).join('.');
  } catch {
    // not built from the default tree
  }
  const q = spawnSync('dpkg-query', ['-W', '-f', '${Version}', 'linux-source-6.12'], { encoding: 'utf8' });
  return { source, package: q.status === 0 && q.stdout ? q.stdout : null };
}

// ---------------------------------------------------------------------------------------
// Output

const fmtRate = (x: number | null) => (x === null ? '—' : Math.round(x).toString());
const fmtRatio = (a: number | null, b: number | null) => (a === null || b === null || b === 0 ? '—' : (a / b).toFixed(2));

function cell(side: Side | null, rounds: number): string {
  if (side === null) return '—';
  if (side.runs.length === 0) return side.failures.length ? `failed ${side.failures.length}/${rounds}` : '—';
  const mark = side.failures.length ? ` (${side.failures.length} failed)` : '';
  const spread = side.median && side.min !== null && side.max !== null ? ` ±${Math.round((50 * (side.max - side.min)) / side.median)}%` : '';
  return `${fmtRate(side.median)}${spread}${mark}`;
}

function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ').trimEnd();
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

/** Everything to footnote about a row: caveats, skips, failures, postcopy's output format. */
function rowNotes(r: Row): string[] {
  const texts = [...r.notes];
  if (r.skipped) texts.unshift(`skipped: ${r.skipped}`);
  for (const f of r.kernel.failures) texts.push(`kernel run failed: ${f}`);
  for (const f of r.postcopy?.failures ?? []) texts.push(`postcopy run failed: ${f}`);
  for (const p of r.formatProblems) texts.push(`postcopy output: ${p}`);
  if (r.lineDifferences?.length) texts.push(`postcopy's lines differ from the kernel's: ${r.lineDifferences.join('; ')}`);
  return texts;
}

interface ReportOptions {
  rounds: number;
  kernelOnly: boolean;
  machine: MachineFacts;
  kernelVersion: string;
  postcopyReason: string | null;
  backend: string | null;
  pools: string[];
  /** Other processes' and the hypervisor's (steal) share of the CPUs during the runs. */
  others: { others: number; steal: number };
}

function printReport(rows: Row[], opts: ReportOptions): string {
  const out: string[] = [];
  out.push(`demand paging rate, pgs/sec overall (median of ${opts.rounds} alternated runs, ±half the min–max spread)`);
  out.push(`kernel: demand_paging_test ${opts.kernelVersion}; postcopy: ${opts.kernelOnly ? `not run (${opts.postcopyReason ?? '--kernel-only'})` : 'node dist/src/cli/main.js bench'}`);
  if (!opts.kernelOnly && opts.backend !== 'kvm') {
    out.push(
      `WARNING: postcopy bench reports backend '${opts.backend ?? 'unknown'}'${opts.backend === null ? ' (its --json has no "backend")' : ''}, not 'kvm': ` +
        'its vCPUs are not a KVM guest, so its figures are not comparable with the kernel test\'s',
    );
  }
  for (const l of describeMachine(opts.machine)) out.push(l);
  const { others, steal } = opts.others;
  out.push(
    `during the runs other processes used ${(others * 100).toFixed(0)}% of the CPUs, steal ${(steal * 100).toFixed(0)}%` +
      (others + steal > 0.1 ? ' (figures are noisier than on an idle machine)' : ''),
  );
  for (const p of opts.pools) out.push(`hugetlb pool: ${p}`);
  out.push('');
  const notes: string[] = [];
  const noteRef = (texts: string[]) => {
    const refs: string[] = [];
    for (const t of texts) {
      let i = notes.indexOf(t);
      if (i < 0) i = notes.push(t) - 1;
      refs.push(`[${i + 1}]`);
    }
    return refs.join('');
  };
  const uffd = rows.filter((r) => r.kind === 'uffd');
  const limits = rows.filter((r) => r.kind === 'limit');
  out.push(
    table(
      ['userfaultfd config', 'kernel', 'postcopy', 'pc/kernel', 'limit (no uffd)', 'kernel/limit', 'pc/limit', 'pc/pc limit', 'notes'],
      uffd.map((r) => {
        const lim = r.limit?.kernel.median ?? null;
        // Each program against its own no-userfaultfd run: the guests differ in what a
        // first touch costs without userfaultfd, so this is the fairer "fraction of the limit".
        const ownLim = r.limit?.postcopy?.median ?? null;
        const texts = rowNotes(r);
        return [
          r.config.text,
          cell(r.kernel, opts.rounds),
          cell(r.postcopy, opts.rounds),
          fmtRatio(r.postcopy?.median ?? null, r.kernel.median),
          fmtRate(lim),
          fmtRatio(r.kernel.median, lim),
          fmtRatio(r.postcopy?.median ?? null, lim),
          fmtRatio(r.postcopy?.median ?? null, ownLim),
          noteRef(texts),
        ];
      }),
    ),
  );
  if (limits.length) {
    out.push('');
    out.push(
      table(
        ['limit: no userfaultfd', 'kernel', 'postcopy', 'pc/kernel', 'notes'],
        limits.map((r) => {
          return [r.config.text, cell(r.kernel, opts.rounds), cell(r.postcopy, opts.rounds), fmtRatio(r.postcopy?.median ?? null, r.kernel.median), noteRef(rowNotes(r))];
        }),
      ),
    );
  }
  if (notes.length) {
    out.push('');
    notes.forEach((n, i) => out.push(`[${i + 1}] ${n}`));
  }
  return out.join('\n') + '\n';
}

// ---------------------------------------------------------------------------------------

function usageText(): string {
  return `Usage: node dist/bench/compare/run.js [--quick] [--config "FLAGS"]... [--rounds N] [--kernel-only] [--no-limit] [--json] [--list]
                                      [--kernel PATH] [--no-build] [--postcopy PATH] [--timeout S]

Runs the kernel's demand_paging_test (6.12) and \`postcopy bench\` alternately on the same
configurations and prints median rates, postcopy/kernel ratios and the no-userfaultfd limit.

  --rounds N         runs of each program per configuration (default 5)
  --quick            a small set instead of the default set
  --config "FLAGS"   a configuration in the kernel test's flags (repeatable; replaces the default set)
  --kernel-only      run only the kernel test
  --no-limit         skip the no-userfaultfd rows
  --list             print the configurations and exit
  --json             one JSON document on stdout instead of the table
  --kernel PATH      kernel test binary (default bench/out/demand_paging_test; built when missing)
  --no-build         do not build the kernel test when it is missing
  --postcopy PATH    postcopy CLI entry (default dist/src/cli/main.js)
  --timeout S        seconds before one run is killed (default 600)
`;
}

async function main(argv: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      // a configuration starts with a dash, which parseArgs takes for a flag: glue it on
      args: argv.flatMap((a, i) => (a === '--config' && argv[i + 1] !== undefined ? [] : argv[i - 1] === '--config' && i > 0 ? [`--config=${a}`] : [a])),
      options: {
        rounds: { type: 'string', default: '5' },
        quick: { type: 'boolean', default: false },
        config: { type: 'string', multiple: true },
        'kernel-only': { type: 'boolean', default: false },
        'no-limit': { type: 'boolean', default: false },
        list: { type: 'boolean', default: false },
        json: { type: 'boolean', default: false },
        kernel: { type: 'string' },
        'no-build': { type: 'boolean', default: false },
        postcopy: { type: 'string' },
        timeout: { type: 'string', default: '600' },
        help: { type: 'boolean', short: 'h', default: false },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  if (values.help) {
    process.stdout.write(usageText());
    return 0;
  }
  const rounds = Number(values.rounds);
  if (!Number.isInteger(rounds) || rounds < 1) throw new UsageError(`--rounds takes an integer ≥ 1, got '${values.rounds}'`);
  const timeoutMs = Number(values.timeout) * 1000;
  if (!(timeoutMs > 0)) throw new UsageError(`--timeout takes seconds, got '${values.timeout}'`);

  let configs: Config[] = [];
  try {
    if (values.quick) configs.push(...quickConfigs());
    for (const c of values.config ?? []) configs.push(parseConfig(c));
  } catch (e) {
    if (e instanceof ConfigError) throw new UsageError(e.message);
    throw e;
  }
  if (configs.length === 0) configs = defaultConfigs();

  const hugeDefault = defaultHugePageSize();
  // Rows: every distinct configuration; its limit (dropping -u -a -r -d), once per distinct memory.
  const rows: Row[] = [];
  const byText = new Map<string, Row>();
  const newRow = (kind: Row['kind'], config: Config): Row => ({
    kind,
    config,
    limit: null,
    notes: notesFor(config, hugeDefault),
    skipped: null,
    kernel: newSide(),
    postcopy: values['kernel-only'] ? null : newSide(),
    lineDifferences: null,
    formatProblems: new Set(),
    kernelStdout: null,
    postcopyStdout: null,
  });
  for (const c of configs) {
    if (byText.has(c.text)) continue;
    const row = newRow(c.uffd ? 'uffd' : 'limit', c);
    byText.set(c.text, row);
    rows.push(row);
  }
  if (!values['no-limit']) {
    for (const row of [...rows]) {
      if (row.kind !== 'uffd') continue;
      const lc = limitOf(row.config);
      let lim = byText.get(lc.text);
      if (!lim) {
        lim = newRow('limit', lc);
        byText.set(lc.text, lim);
        rows.push(lim);
      }
      row.limit = lim;
    }
  }
  // uffd rows first, then the limits, each in the order given
  rows.sort((a, b) => (a.kind === b.kind ? 0 : a.kind === 'uffd' ? -1 : 1));

  if (values.list) {
    for (const r of rows) process.stdout.write(`${r.kind === 'uffd' ? 'uffd ' : 'limit'}  ${r.config.text}\n`);
    process.stdout.write(`${rows.length} configurations × ${rounds} rounds × ${values['kernel-only'] ? 1 : 2} programs = ${rows.length * rounds * (values['kernel-only'] ? 1 : 2)} runs\n`);
    return 0;
  }

  // Programs
  const kernelPath = values.kernel ?? DEFAULT_KERNEL;
  ensureKernelTest(kernelPath, values.kernel !== undefined, !values['no-build']);
  const postcopyPath = values.postcopy ?? DEFAULT_POSTCOPY;
  let postcopyReason: string | null = null;
  if (!values['kernel-only']) {
    postcopyReason = probePostcopy(postcopyPath);
    if (postcopyReason) throw new MissingError(postcopyReason);
  }
  const backend = values['kernel-only'] ? null : postcopyBackend(postcopyPath);
  const version = kernelTestVersion();
  const kernelVersion = [version.source, version.package ? `(Debian linux-source-6.12 ${version.package})` : null].filter(Boolean).join(' ') || 'unknown version';

  // Hugetlb pools: the largest need of each page size, reserved once, restored at the end.
  const pools = new HugePagePools();
  const restoreAndReport = () => {
    for (const l of pools.restore()) process.stderr.write(`compare: restored hugetlb pool ${l}\n`);
  };
  process.on('exit', restoreAndReport);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(sig, () => {
      current?.kill('SIGKILL');
      restoreAndReport();
      process.stderr.write(`compare: ${sig}, stopped\n`);
      process.exit(128 + ({ SIGHUP: 1, SIGINT: 2, SIGTERM: 15 } as const)[sig]);
    });
  }
  const needs = new Map<number, number>();
  for (const r of rows) {
    const ps = hugetlbPageSize(r.config.source, hugeDefault);
    if (ps === null) continue;
    needs.set(ps, Math.max(needs.get(ps) ?? 0, hugePagesNeeded(r.config.vcpus, r.config.bytesPerVcpu, ps)));
  }
  const poolLines: string[] = [];
  for (const [ps, need] of needs) {
    const why = pools.reserve(ps, need);
    if (why) {
      for (const r of rows) if (hugetlbPageSize(r.config.source, hugeDefault) === ps) r.skipped = why;
    }
    const st = pools.pools.get(ps);
    poolLines.push(
      `${ps / 2 ** 20} MiB pages: need ${need}, ` +
        (st ? `nr_hugepages ${st.original}${st.setTo !== null ? ` -> ${st.setTo} (restored afterwards)` : ''}, ${st.free} free` : 'no pool') +
        (why ? ` — ${why}` : ''),
    );
  }

  const mach = machineFacts();
  const active = rows.filter((r) => !r.skipped);
  const perRound = active.length * (values['kernel-only'] ? 1 : 2);
  process.stderr.write(`compare: ${active.length} configurations × ${rounds} rounds = ${perRound * rounds} runs${rows.length > active.length ? ` (${rows.length - active.length} skipped)` : ''}\n`);
  const started = Date.now();
  const otherLoad = new OtherLoad();

  let failed = 0;
  for (let round = 1; round <= rounds; round++) {
    for (const row of active) {
      const programs: Program[] = values['kernel-only'] ? ['kernel'] : round % 2 ? ['kernel', 'postcopy'] : ['postcopy', 'kernel'];
      for (const program of programs) {
        const side = program === 'kernel' ? row.kernel : row.postcopy!;
        const [cmd, args] = program === 'kernel' ? [kernelPath, row.config.argv] : [process.execPath, [postcopyPath, 'bench', ...row.config.argv]];
        let outcome: Outcome;
        try {
          outcome = await runOnce(cmd, args, timeoutMs);
        } catch (e) {
          throw new MissingError(`cannot run ${cmd}: ${(e as Error).message}`);
        }
        const parsed = parseOutput(outcome.stdout);
        let msg: string;
        if (outcome.code === 0 && parsed.figures) {
          side.runs.push({ round, ...parsed.figures });
          msg = `${fmtRate(parsed.figures.overall)} pgs/sec`;
          if (program === 'kernel') row.kernelStdout ??= outcome.stdout;
          else {
            row.postcopyStdout ??= outcome.stdout;
            for (const p of parsed.formatProblems) row.formatProblems.add(p);
            // The kernel's Overall is exactly Per-vcpu × vCPUs (vCPU 0's pages over the wall time of all).
            const { perVcpu, overall } = parsed.figures;
            const seen = [...row.formatProblems].some((p) => p.startsWith('Overall'));
            if (!seen && Math.abs(overall - perVcpu * row.config.vcpus) > 1e-6 * overall + 1e-3) {
              row.formatProblems.add(
                `Overall is not Per-vcpu × vCPUs as in the kernel test (round ${round}: Overall ${overall}, Per-vcpu ${perVcpu} × ${row.config.vcpus} = ${perVcpu * row.config.vcpus})`,
              );
            }
          }
          if (row.lineDifferences === null && row.kernelStdout && row.postcopyStdout) {
            row.lineDifferences = shapeDifferences(row.kernelStdout, row.postcopyStdout);
          }
        } else {
          const why = outcome.code === 0 ? `no figures in its output (${parsed.formatProblems.join('; ')})` : failureText(outcome);
          side.failures.push(`round ${round}: ${why}`);
          failed++;
          msg = `FAILED ${why}`;
        }
        const elapsed = ((Date.now() - started) / 1000).toFixed(0);
        process.stderr.write(`[${round}/${rounds} ${elapsed}s] ${program.padEnd(8)} ${row.config.text}: ${msg}\n`);
      }
    }
  }
  for (const r of rows) {
    summarize(r.kernel);
    if (r.postcopy) summarize(r.postcopy);
  }
  restoreAndReport();
  const seconds = (Date.now() - started) / 1000;
  const others = otherLoad.share();

  if (values.json) {
    const sideJson = (s: Side | null) => s && { median: s.median, min: s.min, max: s.max, runs: s.runs, failures: s.failures };
    const paired = (r: Row) => {
      if (!r.postcopy) return null;
      const ks = new Map(r.kernel.runs.map((k) => [k.round, k.overall]));
      return median(r.postcopy.runs.filter((p) => ks.has(p.round)).map((p) => p.overall / ks.get(p.round)!));
    };
    const doc = {
      machine: mach,
      kernelTest: { path: kernelPath, source: version.source, package: version.package },
      postcopy: values['kernel-only'] ? null : { command: [process.execPath, postcopyPath, 'bench'], backend },
      rounds,
      seconds,
      cpuShareDuringRuns: others,
      hugetlbPools: [...pools.pools.values()],
      rows: rows.map((r) => ({
        kind: r.kind,
        config: r.config.text,
        argv: r.config.argv,
        limit: r.limit?.config.text ?? null,
        skipped: r.skipped,
        notes: r.notes,
        kernel: sideJson(r.kernel),
        postcopy: sideJson(r.postcopy),
        ratio: r.postcopy?.median != null && r.kernel.median ? r.postcopy.median / r.kernel.median : null,
        pairedRatio: paired(r),
        kernelOfLimit: r.limit?.kernel.median && r.kernel.median !== null ? r.kernel.median / r.limit.kernel.median : null,
        postcopyOfLimit: r.limit?.kernel.median && r.postcopy?.median != null ? r.postcopy.median / r.limit.kernel.median : null,
        postcopyFormatProblems: [...r.formatProblems],
        postcopyLineDifferences: r.lineDifferences,
      })),
    };
    process.stdout.write(JSON.stringify(doc, null, 2) + '\n');
  } else {
    process.stdout.write(
      printReport(rows, { rounds, kernelOnly: values['kernel-only'], machine: mach, kernelVersion, postcopyReason, backend, pools: poolLines, others }),
    );
    process.stdout.write(`(${seconds.toFixed(0)} s)\n`);
  }
  return failed > 0 ? 1 : 0;
}

try {
  process.exitCode = await main(process.argv.slice(2));
} catch (e) {
  if (e instanceof UsageError) {
    process.stderr.write(`compare: ${e.message}\n(see --help)\n`);
    process.exitCode = 2;
  } else if (e instanceof MissingError) {
    process.stderr.write(`compare: ${e.message}\n`);
    process.exitCode = 3;
  } else {
    throw e;
  }
}
