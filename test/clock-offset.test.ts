/**
 * Two clocks' offset from NTP-style exchanges: exact on a symmetric path, within half the
 * round trip on an asymmetric one, the tightest sample chosen, nonsense refused; and a real
 * exchange with a child process whose clock runs a known offset from ours.
 */
import assert from 'node:assert/strict';
import { fork } from 'node:child_process';
import { test } from 'node:test';
import { estimateOffset, toLocal } from '../src/transport/clock-offset.js';

const OFFSET = 5_000_000_000n; // the peer's clock is 5 s ahead

test('a symmetric path gives the offset exactly, with half the round trip as the bound', () => {
  // 100 µs each way, the peer takes 50 µs.
  const t0 = 1_000_000n;
  const s = { t0, t1: t0 + 100_000n + OFFSET, t2: t0 + 150_000n + OFFSET, t3: t0 + 250_000n };
  const o = estimateOffset([s]);
  assert.equal(o.offsetNs, OFFSET);
  assert.equal(o.errorNs, 100_000n, '(250 − 50) / 2 µs');
  assert.equal(toLocal(s.t1, o), t0 + 100_000n);
});

test('an asymmetric path: the true offset is still within the bound, and the tightest sample wins', () => {
  const t0 = 0n;
  // 10 µs there, 190 µs back: θ is off by 90 µs, within the 100 µs bound.
  const skewed = { t0, t1: t0 + 10_000n + OFFSET, t2: t0 + 10_000n + OFFSET, t3: t0 + 200_000n };
  const tight = { t0: 1_000_000n, t1: 1_000_000n + 5_000n + OFFSET, t2: 1_000_000n + 5_000n + OFFSET, t3: 1_010_000n };
  const loose = estimateOffset([skewed]);
  assert.ok(loose.offsetNs - OFFSET <= loose.errorNs && OFFSET - loose.offsetNs <= loose.errorNs, 'within the bound');
  const both = estimateOffset([skewed, tight]);
  assert.equal(both.errorNs, 5_000n, 'the 10 µs round trip gives the bound');
  assert.equal(both.offsetNs, OFFSET);
});

test('samples that cannot be are refused', () => {
  assert.throws(() => estimateOffset([]), /no samples/);
  assert.throws(() => estimateOffset([{ t0: 10n, t1: 0n, t2: 0n, t3: 5n }]), /received .* before sent/);
  assert.throws(() => estimateOffset([{ t0: 0n, t1: 10n, t2: 5n, t3: 20n }]), /replied .* before it received/);
  assert.throws(() => estimateOffset([{ t0: 0n, t1: 0n, t2: 100n, t3: 20n }]), /longer than the round trip/);
});

test('a real exchange with a process whose clock runs 5 s ahead: the estimate is within its bound', async () => {
  const child = fork(new URL('./helpers/clock-peer.js', import.meta.url).pathname, [String(OFFSET)]);
  try {
    await new Promise<void>((resolve) => child.once('message', () => resolve()));
    const samples = [];
    for (let i = 0; i < 20; i++) {
      const t0 = process.hrtime.bigint();
      child.send({ t0: String(t0) });
      const r = await new Promise<{ t1: string; t2: string }>((resolve) => child.once('message', (m: { t1: string; t2: string }) => resolve(m)));
      samples.push({ t0, t1: BigInt(r.t1), t2: BigInt(r.t2), t3: process.hrtime.bigint() });
    }
    const o = estimateOffset(samples);
    const off = o.offsetNs - OFFSET;
    assert.ok(off <= o.errorNs && -off <= o.errorNs, `offset ${o.offsetNs} off by ${off} ns, bound ${o.errorNs} ns`);
  } finally {
    child.kill();
  }
});
