/**
 * The report as one self-contained HTML file: uPlot's script and stylesheet inlined from
 * its npm package, the view as JSON, and the drawing script (client.ts). A Content
 * Security Policy of default-src 'none' makes the page unable to fetch anything at all, so
 * it reads the same offline, from a mail attachment or a CI artefact.
 *
 * uPlot (MIT, ~50 KB minified, no dependencies): canvas line and bar charts that draw tens
 * of thousands of points in milliseconds, with log scales; the report needs nothing more.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { drawReport } from './client.js';
import type { Figure, ReportView, RunView } from './view.js';

const require = createRequire(import.meta.url);

function asset(path: string): string {
  return readFileSync(require.resolve(path), 'utf8');
}

const escapeHtml = (s: string) => s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);

/** Script text inside a <script> element: no `</script` can end it early. */
const inScript = (s: string) => s.replace(/<\/(script)/gi, '<\\/$1');
/** JSON inside a <script> element: every `<` escaped (`<` only occurs in its strings). */
const jsonInScript = (v: unknown) => JSON.stringify(v).replace(/</g, '\\u003c');

/** A figure as the page shows it: integers from 1000 on with separators, others to 4 significant digits. */
export function formatFigure(value: number): string {
  if (!Number.isFinite(value)) return 'n/a';
  if (Math.abs(value) >= 1000 || Number.isInteger(value)) return Math.round(value).toLocaleString('en-US');
  return String(Number(value.toPrecision(4)));
}

function figureRow(f: Figure): string {
  const shown = f.value * (f.scale ?? 1);
  return `<tr><th>${escapeHtml(f.label)}</th><td class="num" data-path="${escapeHtml(f.path)}" data-value="${String(f.value)}" data-scale="${f.scale ?? 1}">${formatFigure(shown)}</td><td>${escapeHtml(f.unit)}</td></tr>`;
}

function runSection(r: RunView): string {
  return `<section class="run" id="${r.id}">
<h2>${escapeHtml(r.title)}</h2>
<p class="meta"><code>${escapeHtml(r.command)}</code></p>
<p class="meta">${escapeHtml(r.machine)}<br>${escapeHtml(r.file)}, ${escapeHtml(r.at)}</p>
<table class="figures">${r.figures.map(figureRow).join('')}</table>
${r.charts.map((c) => `<figure><figcaption>${escapeHtml(c.title)}</figcaption><div class="chart" id="${c.id}" data-x-label="${escapeHtml(c.xLabel)}" data-y-label="${escapeHtml(c.yLabel)}"></div>${c.note ? `<p class="note">${escapeHtml(c.note)}</p>` : ''}</figure>`).join('\n')}
${r.missing.map((m) => `<p class="missing">${escapeHtml(m)}</p>`).join('\n')}
</section>`;
}

const STYLE = `
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; background: #fff; }
h1 { font-size: 1.4em; margin: 0 0 .6em; } h2 { font-size: 1.15em; margin: .2em 0 .4em; }
.runs { display: grid; grid-template-columns: repeat(auto-fit, minmax(560px, 1fr)); gap: 1.5em; }
.run { border-top: 2px solid #ccd; padding-top: .5em; min-width: 0; }
.meta { color: #555; margin: .2em 0; font-size: .9em; } code { font-size: .95em; }
table.figures { border-collapse: collapse; margin: .6em 0; } .figures th { text-align: left; font-weight: normal; padding: 1px 1em 1px 0; color: #444; }
.figures td.num { text-align: right; font-variant-numeric: tabular-nums; padding-right: .4em; }
figure { margin: 1em 0; } figcaption { font-weight: 600; margin-bottom: .3em; }
.note, .missing { color: #666; font-size: .85em; margin: .2em 0; } .missing { font-style: italic; }
`;

export function reportHtml(view: ReportView): string {
  const uplotJs = asset('uplot/dist/uPlot.iife.min.js');
  const uplotCss = asset('uplot/dist/uPlot.min.css');
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(view.title)}</title>
<style>${uplotCss}</style>
<style>${STYLE}</style>
</head>
<body>
<h1>${escapeHtml(view.title)}</h1>
${view.compare.length ? `<section class="compare"><h2>Side by side</h2>${view.compare.map((c) => `<figure><figcaption>${escapeHtml(c.title)}</figcaption><div class="chart" id="${c.id}" data-x-label="${escapeHtml(c.xLabel)}" data-y-label="${escapeHtml(c.yLabel)}"></div></figure>`).join('')}</section>` : ''}
<div class="runs">
${view.runs.map(runSection).join('\n')}
</div>
<script id="postcopy-view" type="application/json">${jsonInScript(view)}</script>
<script>${inScript(uplotJs)}</script>
<script>
(${inScript(drawReport.toString())})(JSON.parse(document.getElementById('postcopy-view').textContent), uPlot, document, window);
</script>
</body>
</html>
`;
}
