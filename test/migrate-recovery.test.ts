/**
 * A lost link during a migration, on real sockets through a relay the test cuts: in
 * post-copy both sides pause, keep everything, and resume when the link returns (a reset,
 * a silent stall caught by keepalives and --timeout, a second loss right after a first);
 * the guest runs on and the oracle finds not one write lost. In precopy the source's guest
 * runs on at the source and the destination discards its copy. The threads guest runs
 * everywhere; KVM too where usable.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, test } from 'node:test';
import type { DestinationReport } from '../src/apps/migrate/destination/destination.js';
import type { SourceReport } from '../src/apps/migrate/source/source.js';
import type { GuestBackendName } from '../src/guest/guest.js';
import { kvmAvailability } from '../src/guest/open.js';
import { CutRelay } from '../bench/lib/cut-relay.js';
import { type Child, postcopy } from './helpers/processes.js';

const NO_UFFD = process.getuid?.() === 0 || existsSync('/dev/userfaultfd') ? undefined : 'not root and no /dev/userfaultfd: run as root, or give this user access to /dev/userfaultfd';
const kvm = kvmAvailability();
const GUESTS: readonly [GuestBackendName, string | undefined][] = [
  ['threads', NO_UFFD],
  ['kvm', NO_UFFD ?? (kvm.usable ? undefined : `no usable KVM (${kvm.reason}); the threads guest's runs stand in`)],
];
for (const [g, why] of GUESTS) if (why) console.log(`# skipping recovery tests with the ${g} guest: ${why}`);

interface Run {
  src: Child;
  dst: Child;
  relay: CutRelay;
}

/** A destination, a relay in front of it, and a source migrating through the relay. */
async function start(guest: GuestBackendName, sendArgs: string[], timeout = '2s'): Promise<Run> {
  const common = ['--json', '--timeout', timeout, '--recover-timeout', '30s', '--guest', guest];
  const dst = postcopy(['migrate', 'receive', '--listen', '127.0.0.1:0', '--run-after', '300ms', ...common]);
  const port = Number((await dst.waitFor(/listening on 127\.0\.0\.1:(\d+)/))[1]);
  const relay = await CutRelay.start(port);
  const src = postcopy(['migrate', 'send', '--connect', `127.0.0.1:${relay.port}`, '-s', 'shmem', '-b', '64M', '-v', '2', '--warmup', '100ms', ...common, ...sendArgs]);
  return { src, dst, relay };
}

/** Both sides exit 0; every page checked, nothing lost; both went through `pauses` pause(s) and back. */
async function completes(r: Run, pauses: number): Promise<{ source: SourceReport; destination: DestinationReport }> {
  const [s, d] = await Promise.all([r.src.exited(), r.dst.exited()]);
  r.relay.close();
  assert.equal(s, 0, `source exited ${s}:\n${r.src.stderr()}`);
  assert.equal(d, 0, `destination exited ${d}:\n${r.dst.stderr()}`);
  const source = JSON.parse(r.src.stdout()) as SourceReport;
  const destination = JSON.parse(r.dst.stdout()) as DestinationReport;
  assert.equal(destination.oracle.checkedPages, destination.pages, 'every page checked');
  assert.equal(destination.oracle.lostWrites, 0, `lost writes: ${JSON.stringify(destination.oracle.first)}`);
  assert.equal(destination.oracle.guestMismatches, 0, 'the guest itself saw no lost write');
  assert.equal(destination.onDemandPages + destination.backgroundPages, destination.stalePages, 'every stale page was placed once');
  assert.equal(destination.recovery.pauses, pauses, 'the destination paused and resumed');
  assert.equal(source.recovery.pauses, pauses, 'and so did the source');
  const expected = ['precopy', 'switching', 'postcopy', ...Array<string[]>(pauses).fill(['paused', 'recovering', 'postcopy']).flat(), 'complete'];
  assert.deepEqual(destination.timeline.map((e) => e.state), expected, 'the destination: paused, recovering, post-copy again');
  assert.deepEqual(source.timeline.map((e) => e.state).filter((s) => s !== 'paused' && s !== 'recovering'), expected.filter((s) => s !== 'paused' && s !== 'recovering'));
  assert.ok(source.timeline.filter((e) => e.state === 'paused').length >= pauses, 'the source paused (once per loss, and again per failed attempt)');
  return { source, destination };
}

/** Post-copy long enough to cut: a slow background stream (the guest's own requests are never limited). */
const SLOW_POSTCOPY = ['--postcopy-now', '--bandwidth', '8M'];

for (const [guest, SKIP] of GUESTS) {
  describe(`migrate: a link lost in post-copy (${guest} guest)`, { skip: SKIP }, () => {
    test('reset, and back after a second: both sides pause, the source reconnects, the rest arrives, not one write lost', async () => {
      const r = await start(guest, SLOW_POSTCOPY);
      await r.dst.waitFor(/resumed: \d+ stale/);
      await sleep(300);
      r.relay.cut();
      await r.dst.waitFor(/post-copy paused: /);
      await r.src.waitFor(/post-copy paused: /);
      await sleep(1000);
      r.relay.restore();
      await r.src.waitFor(/post-copy resumed \(attempt \d+/);
      await r.dst.waitFor(/post-copy resumed after \d+ ms: \d+ page\(s\) still needed/);
      await completes(r, 1);
    });

    test('silent for longer than --timeout: keepalives stop, both sides notice and pause; pages lost on the wire come again', async () => {
      const r = await start(guest, SLOW_POSTCOPY, '2s');
      await r.dst.waitFor(/resumed: \d+ stale/);
      await sleep(300);
      r.relay.stall();
      // Nothing is reset: only the idle timeout (2 s, keepalives every 500 ms) can tell.
      await r.dst.waitFor(/post-copy paused: .*(no data|no frame|silent|closed)/, 10_000);
      await r.src.waitFor(/post-copy paused: /, 10_000);
      r.relay.restore();
      await completes(r, 1);
    });

    test('lost again right after it came back: handled the same way, twice', async () => {
      const r = await start(guest, SLOW_POSTCOPY);
      await r.dst.waitFor(/resumed: \d+ stale/);
      r.relay.cut();
      await r.dst.waitFor(/post-copy paused: /);
      await sleep(300);
      r.relay.restore();
      await r.dst.waitFor(/post-copy resumed after/);
      r.relay.cut();
      await sleep(500);
      r.relay.restore();
      await completes(r, 2);
    });
  });
}

describe('migrate: a link lost in precopy', { skip: NO_UFFD }, () => {
  test('the source\'s guest runs on there (checked clean), the destination discards its copy; both exit non-zero naming the cause', async () => {
    // Many rounds of a guest that keeps dirtying: precopy lasts until the cut.
    const r = await start('threads', ['--max-rounds', '1000', '--max-stale', '0', '--postcopy-after', '60s', '--keep-precopy']);
    await r.dst.waitFor(/accepted /);
    await sleep(500);
    r.relay.cut();
    const [s, d] = await Promise.all([r.src.exited(), r.dst.exited()]);
    r.relay.close();
    assert.equal(s, 1, r.src.stderr());
    assert.match(r.src.stderr(), /failed before the switchover \(in (handshake|precopy)\): .*the guest ran on here after the failure, and its memory checks clean \(\d+ pages\); the destination discards its copy/);
    assert.notEqual(d, 0, 'the destination fails');
    assert.match(r.dst.stderr(), /postcopy: .*(peer closed|connection).*failed before the switchover: this destination discards its copy/, r.dst.stderr());
    assert.doesNotMatch(r.dst.stderr(), /post-copy paused/, 'nothing to pause: its guest never ran');
    assert.equal(r.dst.stdout(), '', 'no report');
  });
});

describe('migrate recover', () => {
  test('refuses a pid that is not a postcopy migration, and one that does not exist', async () => {
    const p = postcopy(['migrate', 'recover', String(process.pid)]);
    assert.equal(await p.exited(), 3);
    assert.match(p.stderr(), /is not a `postcopy migrate send` or `receive`/);
    const q = postcopy(['migrate', 'recover', '999999999']);
    assert.equal(await q.exited(), 3);
    assert.match(q.stderr(), /no process 999999999/);
    const u = postcopy(['migrate', 'recover']);
    assert.equal(await u.exited(), 2);
  });

  test('a paused source told to recover reconnects at once, and the migration completes', { skip: NO_UFFD }, async () => {
    const r = await start('threads', SLOW_POSTCOPY);
    await r.dst.waitFor(/resumed: \d+ stale/);
    r.relay.cut();
    await r.src.waitFor(/post-copy paused: .*`postcopy migrate recover (\d+)`/);
    await sleep(1500);
    r.relay.restore();
    const ask = postcopy(['migrate', 'recover', String(r.src.process.pid)]);
    assert.equal(await ask.exited(), 0, ask.stderr());
    assert.match(ask.stderr(), /asked the source \(pid \d+\) to reconnect now/);
    await completes(r, 1);
  });
});
