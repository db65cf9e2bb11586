/**
 * What recording and reporting cost, on this machine, in one run:
 *  1. Does recording the time series change the figures it records? The same command with
 *     and without it (POSTCOPY_NO_SERIES=1), alternating, medians and their ratio: bench
 *     (threads touchers; KVM vCPUs where /dev/kvm is usable) and migrate --demo.
 *  2. The HTML size of one run's report, and of a 4 GiB migration's.
 *  3. How long a 4 GiB migration's report takes to open and draw in headless Chromium.
 *
 *   npm run bench:report -- [--pairs 5] [--big 2G] [--skip-big]
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { reportMain } from '../../src/apps/report/main.js';
import { describeMachine, machineFacts } from '../lib/machine.js';

const MAIN = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
const OUT = fileURLToPath(new URL('../../../bench/out/', import.meta.url));

const { values } = parseArgs({ options: { pairs: { type: 'string' }, big: { type: 'string' }, 'skip-big': { type: 'boolean' } } });
const pairs = Number(values.pairs ?? 5);
const big = values.big ?? '2G';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
function run(args: string[], record: boolean): any {
  const env = { ...process.env, POSTCOPY_NO_SERIES: record ? '0' : '1' };
  const r = spawnSync(process.execPath, [MAIN, ...args], { encoding: 'utf8', env, maxBuffer: 1 << 28, timeout: 600_000 });
  if (r.status !== 0) throw new Error(`postcopy ${args.join(' ')}: exit ${r.status}: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

/** `pairs` alternating runs with and without recording (which goes first alternates too). */
function sideBySide(name: string, args: string[], figures: Record<string, (j: any) => number>): void {
  const on: Record<string, number[]> = {};
  const off: Record<string, number[]> = {};
  for (const k of Object.keys(figures)) (on[k] = []), (off[k] = []);
  for (let i = 0; i < pairs; i++) {
    for (const record of i % 2 ? [false, true] : [true, false]) {
      const j = run(args, record);
      if (((j.series ?? j.source?.series) != null) !== record) throw new Error(`${name}: recording ${record ? 'on' : 'off'} but the JSON says otherwise`);
      for (const [k, f] of Object.entries(figures)) (record ? on : off)[k]!.push(f(j));
    }
  }
  console.log(`\n${name}\n  postcopy ${args.join(' ')}   (${pairs} pairs, alternating)`);
  for (const k of Object.keys(figures)) {
    const a = median(on[k]!);
    const b = median(off[k]!);
    console.log(`  ${k.padEnd(28)} recording ${a.toPrecision(5).padStart(10)}   without ${b.toPrecision(5).padStart(10)}   ratio ${(a / b).toFixed(3)}   (with: ${on[k]!.map((x) => x.toPrecision(4)).join(' ')}; without: ${off[k]!.map((x) => x.toPrecision(4)).join(' ')})`);
  }
}

async function drawTimes(html: string, times: number): Promise<number[]> {
  const { chromium } = await import('playwright-core');
  const out: number[] = [];
  for (let i = 0; i < times; i++) {
    const userData = mkdtempSync(join(tmpdir(), 'postcopy-chromium-'));
    const context = await chromium.launchPersistentContext(userData, {
      executablePath: '/usr/bin/chromium',
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
      viewport: { width: 1400, height: 1000 },
    });
    try {
      const page = await context.newPage();
      const t0 = performance.now();
      await page.goto(pathToFileURL(html).href);
      await page.waitForSelector('body[data-drawn]', { timeout: 30_000 });
      out.push(performance.now() - t0);
      if (i === 0) await page.screenshot({ path: html.replace(/\.html$/, '.png'), fullPage: true });
    } finally {
      await context.close();
      rmSync(userData, { recursive: true, force: true });
    }
  }
  return out;
}

console.log(describeMachine(machineFacts()));
mkdirSync(OUT, { recursive: true });
const kvm = existsSync('/dev/kvm') && process.env.POSTCOPY_NO_KVM !== '1';
sideBySide('bench, threads touchers', ['bench', '-u', 'MINOR', '-s', 'shmem', '-b', '256M', '-v', '2', '--vcpu-threads', '--json'], {
  'overall rate (pages/s)': (j) => j.overallRate,
  'fault service p50 (µs)': (j) => j.uffd.serviceNs.p50 / 1e3,
});
if (kvm) {
  sideBySide('bench, KVM vCPUs', ['bench', '-u', 'MINOR', '-s', 'shmem', '-b', '256M', '-v', '2', '--json'], {
    'overall rate (pages/s)': (j) => j.overallRate,
    'fault service p50 (µs)': (j) => j.uffd.serviceNs.p50 / 1e3,
  });
}
sideBySide('migrate --demo, threads guest', ['migrate', '--demo', '-b', '128M', '-v', '2', '--guest', 'threads', '--json'], {
  'downtime (ms)': (j) => j.destination.downtimeMs,
  'precopy (ms)': (j) => j.source.precopyMs,
  'first-round stream (MB/s)': (j) => j.source.streamMBps,
});

const dir = mkdtempSync(join(tmpdir(), 'postcopy-report-bench-'));
try {
  const one = join(dir, 'bench.json');
  writeFileSync(one, JSON.stringify(run(['bench', '-u', 'MINOR', '-s', 'shmem', '-b', '1G', '-v', '2', '--vcpu-threads', '--json'], true)));
  const oneHtml = join(OUT, 'report-bench-1G.html');
  console.log(`\nHTML of one run (bench -u MINOR -s shmem -b 1G -v 2 --vcpu-threads): ${(reportMain([one], oneHtml).bytes / 1024).toFixed(1)} KiB`);
  if (!values['skip-big']) {
    const args = ['migrate', '--demo', '-b', big, '-v', '2', '--guest', 'threads', '--timeout', '60s', '--json'];
    const m = join(dir, 'migrate-big.json');
    const j = run(args, true);
    writeFileSync(m, JSON.stringify(j));
    const html = join(OUT, 'report-migrate-big.html');
    const { bytes } = reportMain([m], html);
    console.log(`\n${big} × 2 migration: postcopy ${args.join(' ')}`);
    console.log(`  ${j.destination.series.t.length} destination samples, ${j.source.series.t.length} source samples; total ${j.source.totalMs.toFixed(0)} ms; lost writes ${j.destination.oracle.lostWrites}`);
    console.log(`  HTML: ${(bytes / 1024).toFixed(1)} KiB`);
    if (existsSync('/usr/bin/chromium')) {
      const t = await drawTimes(html, 5);
      console.log(`  open + draw in headless Chromium (fresh profile each): median ${median(t).toFixed(0)} ms (${t.map((x) => x.toFixed(0)).join(' ')})`);
    } else console.log('  no /usr/bin/chromium: draw time not measured (apt-get install -y chromium)');
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
