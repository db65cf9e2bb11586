/**
 * Snapshot restore, side by side in one run (`npm run bench:snapshot`), as a user runs it:
 * every restore is its own `postcopy snapshot restore DIR --json` process (cold, as a
 * restore is; Node's start-up and the restorer's thread start reported apart, as the
 * command reports them). A threads guest whose workload, after a first pass over all its
 * memory, touches 10 % of its pages in a scattered order (`save --working-set 10%`) is
 * saved into /dev/shm (its memory file in the page cache), then restored
 *
 * - on demand (MISSING: UFFDIO_COPY from the file's mapping),
 * - eager (every page copied before the guest runs),
 * - prefetch, before the guest runs, of the working set the first on-demand run recorded,
 * - the same prefetch placed right after the guest starts (--prefetch-after),
 * - MINOR from shared memory (--consume: the guest runs over a fresh copy of the snapshot
 *   mapped shared, UFFDIO_CONTINUE, nothing copied; the copy is made outside the timing),
 *
 * each `--rounds` times, alternating; then time to resume at each of `--sizes`, with the
 * threads started before the open and without (--no-prestart), alternating.
 *
 *   --size SIZE      guest for the side-by-side modes (default 1G)
 *   --sizes LIST     sizes for time to resume (default 1G,4G)
 *   --rounds N       rounds (default 3)
 *   --working-set P  the workload's share after its first pass (default 10%)
 *   --json           one JSON document
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { parseSize, formatSize } from '../../src/util/format.js';
import { describeMachine, machineFacts } from '../lib/machine.js';

const { values } = parseArgs({
  options: {
    size: { type: 'string', default: '1G' },
    sizes: { type: 'string', default: '1G,4G' },
    rounds: { type: 'string', default: '3' },
    'working-set': { type: 'string', default: '10%' },
    json: { type: 'boolean', default: false },
  },
});
const size = parseSize(values.size!)!;
const sizes = values.sizes!.split(',').map((s) => parseSize(s)!);
const rounds = Number(values.rounds);
const log = (s: string) => void (values.json ? undefined : process.stderr.write(`${s}\n`));
const MAIN = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

/** Runs the CLI, returns its JSON; a non-zero exit (a lost write, a refusal) fails the bench. */
function postcopy(args: string[]): any {
  return JSON.parse(execFileSync(process.execPath, [MAIN, ...args, '--json'], { encoding: 'utf8', maxBuffer: 64 << 20, stdio: ['ignore', 'pipe', 'inherit'] }));
}

function save(bytes: number, dir: string) {
  return postcopy(['snapshot', 'save', '--out', dir, '--guest', 'threads', '-s', 'shmem', '-b', String(bytes / 2), '-v', '2', '--working-set', values['working-set']!, '--run', '200ms']);
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

interface Sample { resumeMs: number; workloadEndMs: number; faults: number; copied: number; continued: number; prefetched: number; bad: number; nodeStartMs: number; prestartMs: number | null }
const sample = (j: any): Sample => ({
  resumeMs: j.timings.resumeMs,
  workloadEndMs: j.timings.workloadEndMs,
  faults: j.faults.total,
  copied: j.copiedUnits,
  continued: j.continuedUnits,
  prefetched: j.placed.byPrefetch,
  bad: j.oracle.lostWrites + j.oracle.guestMismatches,
  nodeStartMs: j.nodeStartMs,
  prestartMs: j.prestartMs,
});

async function main() {
  const facts = machineFacts();
  log(describeMachine(facts).join('\n'));
  const dir = mkdtempSync('/dev/shm/postcopy-bench-snapshot-');
  try {
    const snap = join(dir, 'a');
    log(`saving a ${formatSize(size)} threads guest (working set ${values['working-set']}) into ${snap} ...`);
    const saved = save(size, snap);
    log(`saved: ${saved.save.dataUnits} of ${saved.save.units} units hold data; ${saved.workload}`);
    const record = join(dir, 'working-set.json');
    const modes: [string, () => string[]][] = [
      ['on demand (MISSING)', () => ['snapshot', 'restore', snap, '--no-verify', '-u', 'MISSING']],
      ['eager (MISSING)', () => ['snapshot', 'restore', snap, '--no-verify', '-u', 'MISSING', '--eager']],
      ['prefetch before resume (MISSING)', () => ['snapshot', 'restore', snap, '--no-verify', '-u', 'MISSING', '--prefetch', record]],
      ['prefetch after resume (MISSING)', () => ['snapshot', 'restore', snap, '--no-verify', '-u', 'MISSING', '--prefetch', record, '--prefetch-after']],
      ['MINOR from shared memory (--consume)', () => {
        const copy = join(dir, 'minor');
        rmSync(copy, { recursive: true, force: true });
        execFileSync('cp', ['-r', '--sparse=always', snap, copy]);
        return ['snapshot', 'restore', copy, '--no-verify', '-u', 'MINOR', '--consume'];
      }],
    ];
    // The record comes from one on-demand restore before the rounds (REAP's first run).
    postcopy(['snapshot', 'restore', snap, '--no-verify', '-u', 'MISSING', '--record', record]);
    const rows = modes.map(([mode]) => ({ mode, samples: [] as Sample[] }));
    for (let r = 0; r < rounds; r++) {
      for (const [i, [name, args]] of modes.entries()) {
        const s = sample(postcopy(args()));
        rows[i]!.samples.push(s);
        log(`round ${r + 1} ${name}: resume ${s.resumeMs.toFixed(1)} ms, workload end ${s.workloadEndMs.toFixed(1)} ms, ${s.faults} faults, ${s.copied} copied, ${s.continued} continued, ${s.prefetched} prefetched, oracle ${s.bad} bad`);
      }
    }
    rmSync(join(dir, 'minor'), { recursive: true, force: true });
    const resume: { size: number; prestarted: Sample[]; cold: Sample[] }[] = [];
    for (const bytes of sizes) {
      const d = join(dir, `r${bytes}`);
      log(`saving ${formatSize(bytes)} for time to resume ...`);
      save(bytes, d);
      const row = { size: bytes, prestarted: [] as Sample[], cold: [] as Sample[] };
      for (let r = 0; r < rounds; r++) {
        row.prestarted.push(sample(postcopy(['snapshot', 'restore', d, '--no-verify', '-u', 'MISSING'])));
        row.cold.push(sample(postcopy(['snapshot', 'restore', d, '--no-verify', '-u', 'MISSING', '--no-prestart'])));
        log(`${formatSize(bytes)} round ${r + 1}: resume ${row.prestarted.at(-1)!.resumeMs.toFixed(2)} ms prestarted, ${row.cold.at(-1)!.resumeMs.toFixed(2)} ms not`);
      }
      resume.push(row);
      rmSync(d, { recursive: true, force: true });
    }
    const med = (xs: Sample[], k: keyof Sample) => median(xs.map((x) => Number(x[k] ?? NaN)));
    const summary = rows.map((r) => ({
      mode: r.mode,
      resumeMs: med(r.samples, 'resumeMs'),
      workloadEndMs: med(r.samples, 'workloadEndMs'),
      faults: med(r.samples, 'faults'),
      copiedUnits: med(r.samples, 'copied'),
      continuedUnits: med(r.samples, 'continued'),
      prefetchedUnits: med(r.samples, 'prefetched'),
      oracleBad: Math.max(...r.samples.map((s) => s.bad)),
    }));
    const onDemand = summary[0]!;
    const out = {
      command: `npm run bench:snapshot -- --size ${values.size} --sizes ${values.sizes} --rounds ${rounds} --working-set ${values['working-set']}`,
      machine: facts,
      size,
      summary: summary.map((s) => ({ ...s, workloadVsOnDemand: onDemand.workloadEndMs / s.workloadEndMs, faultsVsOnDemand: s.faults / onDemand.faults })),
      resume: resume.map((r) => ({ size: r.size, prestartedMs: med(r.prestarted, 'resumeMs'), coldMs: med(r.cold, 'resumeMs'), prestartMs: med(r.prestarted, 'prestartMs'), nodeStartMs: med(r.prestarted, 'nodeStartMs'), oracleBad: Math.max(...[...r.prestarted, ...r.cold].map((s) => s.bad)) })),
    };
    if (values.json) process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
    else {
      console.log(`\n${formatSize(size)} threads guest, 2 workers, working set ${values['working-set']}, snapshot in /dev/shm; medians of ${rounds} round(s), each a restore process`);
      console.log('| mode | time to resume | workload end (from open) | ×faster than on demand | faults | fewer faults | units copied | units continued | prefetched | oracle bad |');
      console.log('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
      for (const s of out.summary) console.log(`| ${s.mode} | ${s.resumeMs.toFixed(1)} ms | ${s.workloadEndMs.toFixed(1)} ms | ${s.workloadVsOnDemand.toFixed(2)} | ${s.faults} | ${((1 - s.faultsVsOnDemand) * 100).toFixed(0)}% | ${s.copiedUnits} | ${s.continuedUnits} | ${s.prefetchedUnits} | ${s.oracleBad} |`);
      console.log('\n| guest | time to resume, threads prestarted | without (--no-prestart) | restorer thread start (apart) | Node start-up (apart) | oracle bad |');
      console.log('| --- | ---: | ---: | ---: | ---: | ---: |');
      for (const r of out.resume) console.log(`| ${formatSize(r.size)} | ${r.prestartedMs.toFixed(2)} ms | ${r.coldMs.toFixed(2)} ms | ${r.prestartMs.toFixed(1)} ms | ${r.nodeStartMs.toFixed(1)} ms | ${r.oracleBad} |`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
