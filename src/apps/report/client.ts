/**
 * The page's own script: draws every chart of the view with uPlot. It runs in the browser,
 * not in Node: html.ts inlines it as this function's source text (so it must not use
 * anything outside its body, and DOM objects come in as `any`: the project compiles
 * without the DOM's types). Everything worth computing was computed in view.ts.
 */
/* eslint-disable @typescript-eslint/no-explicit-any */
import type { ChartSpec, ReportView } from './view.js';

export function drawReport(view: ReportView, uPlot: any, doc: any, win: any): void {
  const t0 = win.performance.now();
  const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf', '#7f7f7f', '#bcbd22'];
  const drawn: { id: string; title: string; plot: any }[] = [];

  function bandsHook(spec: ChartSpec) {
    return (u: any) => {
      const bands = spec.bands ?? [];
      if (bands.length === 0) return;
      const ctx = u.ctx;
      const { left, top, width, height } = u.bbox;
      const px = uPlot.pxRatio;
      ctx.save();
      ctx.font = `${Math.round(11 * px)}px sans-serif`;
      let rounds = 0;
      for (const b of bands) {
        // Clipped to the plot area: a round may have begun before the axis does.
        const x0 = Math.max(left, u.valToPos(b.from, 'x', true));
        const x1 = Math.min(left + width, u.valToPos(b.to, 'x', true));
        if (x1 < left || x0 > left + width) continue;
        // To scale, but never thinner than a line: a 10 ms blackout on a 5 s axis is still seen.
        const w = Math.max(px * 2, x1 - x0);
        if (b.kind === 'blackout') ctx.fillStyle = 'rgba(214, 39, 40, 0.45)';
        else ctx.fillStyle = rounds++ % 2 ? 'rgba(31, 119, 180, 0.08)' : 'rgba(31, 119, 180, 0.16)';
        ctx.fillRect(x0, top, w, height);
        ctx.fillStyle = b.kind === 'blackout' ? '#a00' : '#345';
        const y = b.kind === 'blackout' ? top + 26 * px : top + (12 + 12 * (rounds % 2)) * px;
        if (b.kind === 'blackout' || x1 - x0 > 60 * px) ctx.fillText(b.label, x0 + 3 * px, y);
      }
      ctx.restore();
    };
  }

  function options(spec: ChartSpec, width: number): any {
    const bars = spec.kind === 'bars';
    const n = spec.series.length;
    const names = spec.xNames ?? [];
    const o: any = {
      width,
      height: bars ? 240 : 280,
      legend: { live: false },
      cursor: { drag: { x: !bars, y: false } },
      scales: {
        x: bars ? { time: false, range: (_u: any, min: number, max: number) => [min - 0.5, max + 0.5] } : { time: false },
        // Log: from below 1, so that a bucket holding one fault still shows as a bar.
        y: spec.yLog ? { distr: 3, log: 10, range: (_u: any, _min: number, max: number) => [0.5, Math.max(10, max * 2)] } : { range: (_u: any, _min: number, max: number) => [0, max > 0 ? max * 1.08 : 1] },
      },
      axes: [
        bars
          ? { label: spec.xLabel, splits: () => spec.x.slice(), values: (_u: any, splits: number[]) => splits.map((v) => names[spec.x.indexOf(v)] ?? ''), size: 40, gap: 4 }
          : { label: spec.xLabel },
        { label: spec.yLabel, size: 70 },
      ],
      series: [{ label: spec.xLabel }],
      hooks: { drawClear: [bandsHook(spec)] },
    };
    spec.series.forEach((s, i) => {
      const color = COLORS[i % COLORS.length];
      const line: any = { label: s.label, stroke: color, width: 1.5, spanGaps: false, points: { show: false } };
      if (bars) {
        // Side by side when there are two (align: each on its own side of x).
        line.fill = color + 'cc';
        line.paths = uPlot.paths.bars({ size: [n > 1 ? 0.4 : 0.7, 120], align: n > 1 ? (i === 0 ? 1 : -1) : 0 });
        line.points = { show: false };
      }
      o.series.push(line);
    });
    return o;
  }

  function draw(spec: ChartSpec): void {
    const box = doc.getElementById(spec.id);
    if (!box) return;
    const data = [spec.x.slice(), ...spec.series.map((s) => s.values.slice())];
    const width = Math.max(320, box.clientWidth || 600);
    const plot = new uPlot(options(spec, width), data, box);
    drawn.push({ id: spec.id, title: spec.title, plot });
  }

  for (const r of view.runs) for (const c of r.charts) draw(c);
  for (const c of view.compare) draw(c);
  const drawMs = win.performance.now() - t0;
  win.postcopyReport = { view, charts: drawn, drawMs };
  doc.body.setAttribute('data-drawn', String(drawn.length));
}
