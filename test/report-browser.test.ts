/**
 * `postcopy report` checked in a real browser: a small real bench run and a small real
 * migration (--demo, threads guest) are made with the CLI, turned into one HTML report,
 * and opened from file:// in headless Debian Chromium driven by playwright-core. Every
 * chart must have drawn (opaque series pixels in its plot area, its axis labels), every
 * figure on the page must be the number at its path in the run's JSON, the charts' data
 * must be the JSON's, and the page must have made no request but for itself. A screenshot
 * goes to bench/out/ (not committed); the time to open and draw is logged, not asserted.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { formatFigure } from '../src/apps/report/html.js';
import { reportMain } from '../src/apps/report/main.js';
import { main } from '../src/cli/run.js';
import { Userfaultfd } from '../src/uffd/userfaultfd.js';

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const OUT = fileURLToPath(new URL('../../bench/out/', import.meta.url));
const CHROMIUM = '/usr/bin/chromium';
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'];

function why(): string | undefined {
  if (!existsSync(CHROMIUM)) return `no ${CHROMIUM}: install Debian's browser with \`apt-get install -y chromium\` (.ci/run does)`;
  try {
    createRequire(import.meta.url).resolve('playwright-core');
  } catch {
    return 'playwright-core is not installed: `npm ci` installs it (a devDependency)';
  }
  try {
    Userfaultfd.open({ nonBlocking: true }).close();
  } catch (e) {
    return `the runs need userfaultfd: ${(e as Error).message}`;
  }
  return undefined;
}

function cli(args: string[]): unknown {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 60_000, env: { ...process.env, POSTCOPY_NO_KVM: '1' } });
  assert.equal(r.status, 0, `postcopy ${args.join(' ')}: exit ${r.status}: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

/** The value at `path` (`source.rounds.length`) of `json`. */
function at(json: unknown, path: string): unknown {
  return path.split('.').reduce<unknown>((o, k) => (o as Record<string, unknown> | undefined)?.[k], json);
}

test('a file that is not a postcopy run is refused with its name (exit 3); a missing -o or file is a usage error (exit 2)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'postcopy-report-'));
  try {
    const io = () => {
      const o = { out: '', err: '', io: { out: (t: string) => void (o.out += t), err: (t: string) => void (o.err += t) } };
      return o;
    };
    const cases: [string, string, RegExp][] = [
      ['not-json.json', 'this is not JSON', /not-json\.json: not JSON/],
      ['other.json', '{"name": "some package"}', /other\.json: no postcopy run header/],
      ['bad-bench.json', JSON.stringify({ run: { tool: 'postcopy', kind: 'bench', command: 'x', machine: {} }, totalSeconds: 'soon' }), /bad-bench\.json: totalSeconds is missing or not a number/],
      ['bad-kind.json', JSON.stringify({ run: { tool: 'postcopy', kind: 'snapshot', command: 'x', machine: {} } }), /bad-kind\.json: run\.kind 'snapshot' is not one of/],
    ];
    for (const [name, text, message] of cases) {
      writeFileSync(join(dir, name), text);
      const o = io();
      assert.equal(await main(['report', join(dir, name), '-o', join(dir, 'r.html')], o.io), 3, name);
      assert.match(o.err, message);
      assert.match(o.err, /^postcopy: .*postcopy bench --json/);
      assert.equal(o.err.trim().split('\n').length, 1);
    }
    const missing = io();
    assert.equal(await main(['report', join(dir, 'absent.json'), '-o', join(dir, 'r.html')], missing.io), 3);
    assert.match(missing.err, /absent\.json: no such file/);
    const noOut = io();
    assert.equal(await main(['report', join(dir, 'other.json')], noOut.io), 2);
    assert.match(noOut.err, /-o FILE is required/);
    const noFiles = io();
    assert.equal(await main(['report', '-o', join(dir, 'r.html')], noFiles.io), 2);
    assert.ok(!existsSync(join(dir, 'r.html')), 'nothing written for refused input');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a report of a real bench run and a real migration draws every chart in headless Chromium, shows the JSON\'s numbers, and fetches nothing', { skip: why(), timeout: 120_000 }, async (t) => {
  const { chromium } = await import('playwright-core');
  mkdirSync(OUT, { recursive: true });
  const dir = mkdtempSync(join(tmpdir(), 'postcopy-report-'));
  const userData = mkdtempSync(join(tmpdir(), 'postcopy-chromium-'));
  try {
    const bench = cli(['bench', '-u', 'MINOR', '-s', 'shmem', '-b', '16M', '-v', '2', '--vcpu-threads', '--json']);
    const demo = cli(['migrate', '--demo', '-b', '8M', '-v', '2', '--guest', 'threads', '--warmup', '50ms', '--run-after', '100ms', '--json']);
    const files = [join(dir, 'bench.json'), join(dir, 'migrate.json')];
    writeFileSync(files[0]!, JSON.stringify(bench));
    writeFileSync(files[1]!, JSON.stringify(demo));
    const html = join(OUT, 'report-browser.html');
    const { bytes } = reportMain(files, html);
    t.diagnostic(`report: ${bytes} bytes`);
    assert.ok(/<script>/.test(readFileSync(html, 'utf8')) && !/<script[^>]+src=/.test(readFileSync(html, 'utf8')), 'scripts inline, none by src');

    const context = await chromium.launchPersistentContext(userData, { executablePath: CHROMIUM, headless: true, args: ARGS, viewport: { width: 1400, height: 1000 } });
    try {
      const page = await context.newPage();
      const requests: string[] = [];
      const errors: string[] = [];
      page.on('request', (r) => requests.push(r.url()));
      page.on('pageerror', (e) => errors.push(e.message));
      const url = pathToFileURL(html).href;
      const t0 = performance.now();
      await page.goto(url);
      await page.waitForSelector('body[data-drawn]', { timeout: 30_000 });
      const openMs = performance.now() - t0;
      const drawMs = await page.evaluate(() => (globalThis as unknown as { postcopyReport: { drawMs: number } }).postcopyReport.drawMs);
      t.diagnostic(`opened and drawn in ${openMs.toFixed(0)} ms (charts drawn in ${drawMs.toFixed(1)} ms)`);
      assert.deepEqual(errors, [], 'no script errors');
      assert.deepEqual(requests, [url], 'the page itself, and no other request');

      // Every chart: drawn, with its axis labels, with opaque series pixels inside the plot area.
      const charts = await page.evaluate(() => {
        const r = (globalThis as unknown as { postcopyReport: { view: { runs: { charts: { id: string }[] }[]; compare: { id: string }[] }; charts: { id: string; plot: any }[] } }).postcopyReport;
        const specs = [...r.view.runs.flatMap((x) => x.charts), ...r.view.compare].map((c) => c.id);
        return {
          specs,
          drawn: r.charts.map(({ id, plot }) => {
            const box = (globalThis as any).document.getElementById(id);
            const { left, top, width, height } = plot.bbox;
            const img = plot.ctx.getImageData(left, top, Math.max(1, width), Math.max(1, height)).data;
            let ink = 0;
            for (let i = 0; i < img.length; i += 4) {
              const [R, G, B, A] = [img[i], img[i + 1], img[i + 2], img[i + 3]];
              // A series' stroke or bar: opaque and coloured (grid lines are grey, bands translucent).
              if (A > 200 && Math.max(R, G, B) - Math.min(R, G, B) > 60) ink++;
            }
            return { id, ink, axes: plot.axes.map((a: any) => a.label), expected: [box.dataset.xLabel, box.dataset.yLabel], canvases: box.querySelectorAll('canvas').length, data: plot.data };
          }),
        };
      });
      assert.deepEqual(charts.drawn.map((c) => c.id), charts.specs, 'one drawing per chart of the view');
      assert.ok(charts.specs.length >= 6, `charts: ${charts.specs.join(', ')}`);
      for (const c of charts.drawn) {
        assert.equal(c.canvases, 1, `${c.id}: a canvas`);
        assert.ok(c.ink > 20, `${c.id}: ${c.ink} series pixels drawn`);
        assert.deepEqual(c.axes, c.expected, `${c.id}: axis labels`);
        assert.ok(c.axes.every((l: string) => l.length > 0));
      }
      const ids = charts.drawn.map((c) => c.id);
      for (const want of ['run1-rate', 'run1-latency', 'run2-timeline', 'run2-postcopy', 'run2-rounds', 'run2-blackout']) assert.ok(ids.includes(want), `${want} drawn (have ${ids.join(', ')})`);

      // The charts' data is the JSON's.
      const byId = new Map(charts.drawn.map((c) => [c.id, c.data as (number | null)[][]]));
      const b = bench as { uffd: { serviceLog2Us: number[]; serviceNs: { count: number } }; series: { t: number[] } };
      const hist = byId.get('run1-latency')!;
      assert.equal(hist[1]!.reduce<number>((s, v) => s + (v ?? 0), 0), b.uffd.serviceNs.count, 'histogram bars sum to the faults');
      assert.deepEqual(hist[1]!.map((v) => v ?? 0), b.uffd.serviceLog2Us);
      assert.equal(byId.get('run1-rate')![0]!.length, b.series.t.length, 'one point per recorded sample');
      const d = demo as { source: { rounds: { pages: number }[] }; destination: { precopyPages: number; series: { columns: string[]; values: number[][] } } };
      assert.deepEqual(byId.get('run2-rounds')![1], d.source.rounds.map((r) => r.pages));
      const timeline = byId.get('run2-timeline')!;
      const precopyCol = d.destination.series.values[d.destination.series.columns.indexOf('pages.precopy')]!;
      assert.equal(timeline[1]!.at(-1), precopyCol[timeline[1]!.length - 1], 'the timeline ends at the recorded precopy count');
      assert.equal(Math.max(...(timeline[1] as number[])), d.destination.precopyPages, 'precopy pages in, as the destination reports');

      // Every figure on the page: the JSON's number at its path, shown as formatFigure shows it.
      const figures = await page.evaluate(() =>
        [...(globalThis as any).document.querySelectorAll('section.run')].map((s: any) => ({
          run: s.id,
          cells: [...s.querySelectorAll('td.num')].map((td: any) => ({ path: td.dataset.path, value: td.dataset.value, scale: td.dataset.scale, text: td.textContent })),
        })),
      );
      const jsons: Record<string, unknown> = { run1: bench, run2: demo };
      let checked = 0;
      for (const f of figures) {
        for (const c of f.cells) {
          const v = at(jsons[f.run], c.path);
          assert.equal(typeof v === 'number' ? v : Number.NaN, Number(c.value), `${f.run} ${c.path}`);
          if (typeof v === 'number') assert.equal(c.text, formatFigure(v * Number(c.scale)), `${f.run} ${c.path} as shown`);
          checked++;
        }
      }
      assert.ok(checked >= 15, `${checked} figures checked`);

      const shot = join(OUT, 'report-browser.png');
      await page.screenshot({ path: shot, fullPage: true });
      t.diagnostic(`screenshot: ${shot}`);
    } finally {
      await context.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
    rmSync(userData, { recursive: true, force: true });
  }
});
