/**
 * Snapshot restore, side by side in one run (`npm run bench:snapshot`): a threads guest
 * saved into /dev/shm (so its memory file is in the page cache), then restored
 *
 * - on demand (MISSING: UFFDIO_COPY from the file's mapping),
 * - eager (every page copied before the guest runs),
 * - prefetch of the working set recorded by the on-demand run (MISSING),
 * - MINOR from shared memory (the file mapped private, UFFDIO_CONTINUE, nothing copied),
 *
 * each `--rounds` times, alternating, and time to resume at each of `--sizes`. Figures:
 * time to resume (snapshot opened → guest running, in-process; Node's start-up apart),
 * time until the workload ends, faults through userfaultfd, units copied, and the oracle.
 *
 * The workload is the migrate program's (every worker sweeps its whole slice in order:
 * one pass = every page once), not the 10 % working set in a permuted order: no
 * such guest program mode exists yet, so the working set here is all of memory, in order.
 *
 *   --size SIZE      guest for the side-by-side modes (default 1G)
 *   --sizes LIST     sizes for time to resume (default 1G,4G)
 *   --rounds N       rounds of the four modes (default 3)
 *   --json           one JSON document
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { createGuest } from '../../src/guest/open.js';
import { saveSnapshot } from '../../src/apps/snapshot/save.js';
import { restoreSnapshot, type RestoreOptions, type RestoreReport } from '../../src/apps/snapshot/restore.js';
import { openSnapshot } from '../../src/apps/snapshot/open.js';
import { mergeWorkingSet } from '../../src/apps/snapshot/working-set.js';
import { parseSize, formatSize } from '../../src/util/format.js';
import { describeMachine, machineFacts } from '../lib/machine.js';

const { values } = parseArgs({
  options: {
    size: { type: 'string', default: '1G' },
    sizes: { type: 'string', default: '1G,4G' },
    rounds: { type: 'string', default: '3' },
    json: { type: 'boolean', default: false },
  },
});
const size = parseSize(values.size!)!;
const sizes = values.sizes!.split(',').map((s) => parseSize(s)!);
const rounds = Number(values.rounds);
const log = (s: string) => void (values.json ? undefined : process.stderr.write(`${s}\n`));

async function save(bytes: number, dir: string) {
  const guest = createGuest('threads', { source: 'shmem', size: bytes, vcpus: 2, guestAddress: 4 * 2 ** 30 });
  try {
    await guest.run();
    // Long enough for every worker to write its whole slice: the file is all data.
    for (let i = 0; i < 600; i++) {
      await sleep(50);
      await guest.pause();
      if (guest.states().every((s) => s.pass >= 2n)) break;
      await guest.run();
    }
    if (guest.running) await guest.pause();
    return saveSnapshot(guest, dir);
  } finally {
    if (guest.running) await guest.pause();
    guest.close();
  }
}

const base: Omit<RestoreOptions, 'dir'> = { eager: false, background: false, verify: false, runAfterMs: 20, timeoutMs: 600_000 };
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

interface Row { mode: string; resumeMs: number[]; workloadEndMs: number[]; faults: number[]; copied: number[]; continued: number[]; lost: number[] }

async function main() {
  const facts = machineFacts();
  log(describeMachine(facts).join("\n"));
  const dir = mkdtempSync('/dev/shm/postcopy-bench-snapshot-');
  try {
    log(`saving a ${formatSize(size)} threads guest into ${dir} ...`);
    const saved = await save(size, join(dir, 'a'));
    log(`saved: ${saved.dataUnits} of ${saved.units} units hold data`);
    const snapDir = join(dir, 'a');
    const s = openSnapshot(snapDir);
    const manifest = s.manifest;
    s.close();
    const modes: [string, Partial<RestoreOptions>][] = [
      ['on demand (MISSING)', { mode: 'missing' }],
      ['eager (MISSING)', { mode: 'missing', eager: true }],
      ['prefetch recorded set (MISSING)', { mode: 'missing' }],
      ['MINOR from shared memory', { mode: 'minor' }],
    ];
    const rows: Row[] = modes.map(([mode]) => ({ mode, resumeMs: [], workloadEndMs: [], faults: [], copied: [], continued: [], lost: [] }));
    let recorded: ReturnType<typeof mergeWorkingSet> | undefined;
    for (let r = 0; r < rounds; r++) {
      for (const [i, [name, o]] of modes.entries()) {
        if (name.startsWith('prefetch') && !recorded) continue;
        const rep: RestoreReport = await restoreSnapshot({ ...base, dir: snapDir, ...o, ...(name.startsWith('prefetch') ? { prefetch: recorded! } : {}) });
        if (i === 0 && !recorded) recorded = mergeWorkingSet(undefined, manifest, rep.faulted);
        const row = rows[i]!;
        row.resumeMs.push(rep.timings.resumeMs);
        row.workloadEndMs.push(rep.timings.workloadEndMs);
        row.faults.push(rep.faults.total);
        row.copied.push(rep.copiedUnits);
        row.continued.push(rep.continuedUnits);
        row.lost.push(rep.oracle.lostWrites + rep.oracle.guestMismatches);
        log(`round ${r + 1} ${name}: resume ${rep.timings.resumeMs.toFixed(1)} ms, workload end ${rep.timings.workloadEndMs.toFixed(1)} ms, ${rep.faults.total} faults, ${rep.copiedUnits} copied, ${rep.continuedUnits} continued, oracle ${rep.oracle.lostWrites} lost`);
      }
    }
    const resume: { size: number; resumeMs: number; parts: RestoreReport['timings'] }[] = [];
    for (const bytes of sizes) {
      const d = join(dir, `r${bytes}`);
      log(`saving ${formatSize(bytes)} for time to resume ...`);
      await save(bytes, d);
      const rep = await restoreSnapshot({ ...base, dir: d, mode: 'missing' });
      resume.push({ size: bytes, resumeMs: rep.timings.resumeMs, parts: rep.timings });
      log(`${formatSize(bytes)}: resume ${rep.timings.resumeMs.toFixed(2)} ms (open ${rep.timings.openMs.toFixed(2)}, build+register ${rep.timings.buildMs.toFixed(2)}, threads ${rep.timings.threadsMs.toFixed(2)}); oracle ${rep.oracle.lostWrites} lost`);
      rmSync(d, { recursive: true, force: true });
    }
    const summary = rows.map((r) => ({ mode: r.mode, resumeMs: median(r.resumeMs), workloadEndMs: median(r.workloadEndMs), faults: median(r.faults), copiedUnits: median(r.copied), continuedUnits: median(r.continued), oracleBad: Math.max(...r.lost) }));
    const onDemand = summary[0]!;
    const out = {
      command: `npm run bench:snapshot -- --size ${values.size} --sizes ${values.sizes} --rounds ${rounds}`,
      machine: facts,
      nodeStartupMs: (performance as unknown as { nodeTiming: { bootstrapComplete: number } }).nodeTiming.bootstrapComplete,
      size,
      summary: summary.map((s) => ({ ...s, workloadVsOnDemand: onDemand.workloadEndMs / s.workloadEndMs, faultsVsOnDemand: s.faults / onDemand.faults })),
      resume,
    };
    if (values.json) process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
    else {
      console.log(`\n${formatSize(size)} threads guest, 2 workers, snapshot in /dev/shm; medians of ${rounds} round(s)`);
      console.log('| mode | time to resume | workload end (from open) | ×faster than on demand | faults | units copied | units continued | oracle bad |');
      console.log('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
      for (const s of out.summary) console.log(`| ${s.mode} | ${s.resumeMs.toFixed(1)} ms | ${s.workloadEndMs.toFixed(1)} ms | ${s.workloadVsOnDemand.toFixed(2)} | ${s.faults} | ${s.copiedUnits} | ${s.continuedUnits} | ${s.oracleBad} |`);
      console.log('\n| guest | time to resume | open | build + register | threads |');
      console.log('| --- | ---: | ---: | ---: | ---: |');
      for (const r of resume) console.log(`| ${formatSize(r.size)} | ${r.resumeMs.toFixed(2)} ms | ${r.parts.openMs.toFixed(2)} | ${r.parts.buildMs.toFixed(2)} | ${r.parts.threadsMs.toFixed(2)} |`);
      console.log(`\nNode's own start-up (process start → bootstrap complete): ${out.nodeStartupMs.toFixed(1)} ms`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
