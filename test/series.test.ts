import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Histogram } from '../src/metrics/histogram.js';
import { Recorder, Series } from '../src/metrics/series.js';

test('a series never holds more than maxSamples: every second sample goes and the interval doubles; cumulative counts stay exact', () => {
  const s = new Series({ intervalMs: 10, maxSamples: 64, t0Ns: 0n });
  s.setColumns(['n']);
  for (let i = 0; i <= 10_000; i++) s.add([i * 3], i * 10);
  const d = s.toJSON();
  assert.ok(d.t.length <= 64, `${d.t.length} samples`);
  assert.ok(d.t.length >= 16);
  assert.equal(d.intervalMs, 10 * 2 ** Math.round(Math.log2(d.intervalMs / 10)));
  assert.ok(d.intervalMs >= 10_000 * 10 / 64, `interval ${d.intervalMs}`);
  // Each kept sample is still the counter's value at its time, and the last is the final state.
  d.t.forEach((t, i) => assert.equal(d.values[0]![i], (t / 10) * 3));
  assert.equal(d.t.at(-1), 100_000);
  assert.equal(d.values[0]!.at(-1), 30_000);
  for (let i = 1; i < d.t.length; i++) assert.ok(d.t[i]! > d.t[i - 1]!);
});

test('a sample less than an interval after the one before the last replaces the last; rows of the wrong width are refused', () => {
  const s = new Series({ intervalMs: 10, t0Ns: 0n });
  s.setColumns(['a', 'b']);
  s.add([1, 1], 0);
  s.add([2, 2], 4);
  s.add([3, 3], 8);
  assert.deepEqual(s.toJSON().t, [0, 8]);
  s.add([4, 4], 12);
  assert.deepEqual(s.toJSON().t, [0, 8, 12]);
  assert.deepEqual(s.toJSON().values, [[1, 3, 4], [1, 3, 4]]);
  assert.throws(() => s.add([1], 30), /1 values for 2 columns/);
  assert.throws(() => s.setColumns(['c']), /after the first sample/);
});

test('events are kept in time order (one dated in the past sorts before), up to maxEvents, the rest counted', () => {
  const s = new Series({ maxEvents: 3, t0Ns: 0n });
  s.event('b', { round: 2 }, 20);
  s.event('a', undefined, 5);
  s.event('c', undefined, 30);
  s.event('d', undefined, 40);
  const d = s.toJSON();
  assert.deepEqual(d.events.map((e) => e.name), ['a', 'b', 'c']);
  assert.deepEqual(d.events[1]!.detail, { round: 2 });
  assert.equal(d.droppedEvents, 1);
});

test('a recorder samples its probe on a timer and takes a final sample at stop', async () => {
  const r = new Recorder({ intervalMs: 5 });
  let n = 0;
  r.watch(['n'], () => [n]);
  const end = Date.now() + 120;
  while (Date.now() < end) {
    n++;
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
  const d = r.stop();
  assert.ok(d.t.length >= 3, `${d.t.length} samples in 120 ms`);
  assert.equal(d.values[0]!.at(-1), n, 'the last sample is the final count');
  const v = d.values[0]!;
  for (let i = 1; i < v.length; i++) assert.ok(v[i]! >= v[i - 1]!);
  assert.deepEqual(r.stop().t, d.t, 'stop twice: nothing more');
});

test("the histogram's log2 µs buckets are QEMU's: [2^N, 2^(N+1)) µs, under 1 µs in bucket 0; they merge and survive toData", () => {
  const h = new Histogram();
  for (const ns of [0, 500, 999, 1000, 1999, 2000, 3999, 4000, 1_000_000, 2 ** 20 * 1000 - 1]) h.record(ns);
  // 0..1999 ns → bucket 0 (five), 2000, 3999 → 1, 4000 → 2, 1 ms = 1000 µs → 9, 2^20 µs - 1 ns → 19.
  const c = h.log2UsCounts();
  assert.equal(c.length, 20);
  assert.deepEqual([c[0], c[1], c[2], c[9], c[19]], [5, 2, 1, 1, 1]);
  assert.equal(c.reduce((a, b) => a + b, 0), h.count);
  const m = Histogram.from(h.toData());
  m.merge(h.toData());
  assert.deepEqual(m.log2UsCounts(), c.map((x) => 2 * x));
  // Data without log2Us (older JSON): the fine buckets stand in.
  const { log2Us: _drop, ...old } = h.toData();
  void _drop;
  assert.equal(Histogram.from(old).log2UsCounts().reduce((a, b) => a + b, 0), h.count);
});
