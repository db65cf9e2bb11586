/**
 * `postcopy migrate` end to end: two processes, two guests (threads everywhere; KVM VMs
 * too where /dev/kvm is usable), real TCP on loopback, real userfaultfd. The guest counts its passes in every page; after each migration the
 * destination pauses it and checks every page (the oracle). Also: what a listener does
 * with peers that do not speak the protocol, and what a destination does when its source
 * dies in the middle of post-copy.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { describe, test } from 'node:test';
import type { DestinationReport } from '../src/apps/migrate/destination/destination.js';
import type { SourceReport } from '../src/apps/migrate/source/source.js';
import { FrameType, PROTOCOL_MAGIC, PROTOCOL_VERSION } from '../src/apps/migrate/protocol.js';
import type { GuestBackendName } from '../src/guest/guest.js';
import { kvmAvailability, programOf } from '../src/guest/open.js';
import { THREADS_STATE_BYTES } from '../src/guest/threads/layout.js';
import { encodeHeader } from '../src/transport/frame.js';
import { type Child, postcopy } from './helpers/processes.js';
import { prepare } from './helpers/requirements.js';

const NO_UFFD = process.getuid?.() === 0 || existsSync('/dev/userfaultfd') ? undefined : 'not root and no /dev/userfaultfd: run as root, or give this user access to /dev/userfaultfd';
const kvm = kvmAvailability();
/** Each backend's reason to skip, or undefined: threads run wherever userfaultfd does. */
const GUESTS: readonly [GuestBackendName, string | undefined][] = [
  ['threads', NO_UFFD],
  ['kvm', NO_UFFD ?? (kvm.usable ? undefined : `no usable KVM (${kvm.reason}); the threads guest's runs stand in`)],
];
for (const [g, why] of GUESTS) if (why) console.log(`# skipping migration tests with the ${g} guest: ${why}`);

/** A destination on a free loopback port; resolves once it listens. */
async function receiver(extra: string[] = [], guest?: GuestBackendName): Promise<{ child: Child; port: number }> {
  const child = postcopy(['migrate', 'receive', '--listen', '127.0.0.1:0', '--json', '--run-after', '300ms', '--timeout', '10s', ...(guest ? ['--guest', guest] : []), ...extra]);
  const m = await child.waitFor(/listening on 127\.0\.0\.1:(\d+)/);
  return { child, port: Number(m[1]) };
}

function sender(port: number, extra: string[], guest: GuestBackendName): Child {
  return postcopy(['migrate', 'send', '--connect', `127.0.0.1:${port}`, '--json', '--warmup', '100ms', '--timeout', '10s', '--guest', guest, ...extra]);
}

/** Runs one migration and returns both reports, asserting both processes exit 0. */
async function migrate(guest: GuestBackendName, args: string[], receiveArgs: string[] = []): Promise<{ source: SourceReport; destination: DestinationReport }> {
  const { child: dst, port } = await receiver(receiveArgs, guest);
  const src = sender(port, args, guest);
  const [srcCode, dstCode] = await Promise.all([src.exited(), dst.exited()]);
  assert.equal(srcCode, 0, `source exited ${srcCode}:\n${src.stderr()}`);
  assert.equal(dstCode, 0, `destination exited ${dstCode}:\n${dst.stderr()}`);
  return { source: JSON.parse(src.stdout()) as SourceReport, destination: JSON.parse(dst.stdout()) as DestinationReport };
}

/** What every migration must show: all pages accounted for, and not one write lost. */
function assertComplete(source: SourceReport, d: DestinationReport, pages: number): void {
  assert.equal(d.pages, pages);
  assert.equal(d.oracle.checkedPages, pages, 'every page checked');
  assert.equal(d.oracle.lostWrites, 0, `lost writes: ${JSON.stringify(d.oracle.first)}`);
  assert.equal(d.oracle.guestMismatches, 0, 'the guest itself saw a counter that was not the last pass');
  assert.equal(d.stalePages, source.stalePages, 'both sides agree on the stale set');
  assert.equal(d.onDemandPages + d.backgroundPages, d.stalePages, 'every stale page arrived exactly once');
  assert.equal(source.onDemandPages + source.backgroundPages, source.stalePages, 'the source sent every stale page once');
  assert.ok(source.rounds[0]!.pages === pages, 'the first round sends every page');
  assert.equal(d.guest, source.guest, 'both sides ran the same guest backend');
  // One machine, one CLOCK_MONOTONIC: the offset measured over the link must be 0 within its bound.
  assert.ok(source.clock && Math.abs(source.clock.offsetMs) <= source.clock.errorMs + 1e-6, `clock offset ${source.clock?.offsetMs} ± ${source.clock?.errorMs} ms`);
  // The guest ran on after the migration: its passes went on from where the source paused it.
  d.states.forEach((s, i) => {
    const before = source.states[i]!;
    assert.ok(BigInt(s.pass) * BigInt(pages) + BigInt(s.index) > BigInt(before.pass) * BigInt(pages) + BigInt(before.index), `worker ${i} made progress on the destination`);
  });
  assert.deepEqual(d.timeline.map((e) => e.state), ['precopy', 'switching', 'postcopy', 'complete'], 'the destination went through every state once, in order');
  assert.deepEqual(source.timeline.map((e) => e.state), ['precopy', 'switching', 'postcopy', 'complete'], 'and the source too');
}

for (const [guest, SKIP] of GUESTS) {
const migrate_ = (args: string[], receiveArgs: string[] = []) => migrate(guest, args, receiveArgs);
describe(`postcopy migrate (${guest} guest)`, { skip: SKIP }, () => {
  const pages = (128 * 2 ** 20) / 4096;

  test('MINOR on shmem: 128 MiB, 2 vCPUs, post-copy right after the first round, not one write lost', async (t) => {
    const { source, destination } = await migrate_(['-s', 'shmem', '-u', 'MINOR', '-b', '64M', '-v', '2', '--postcopy-now', '--warmup', '0']);
    assert.equal(destination.mode, 'minor');
    assert.ok(destination.stalePages > 0, 'the guest dirtied pages during the first round');
    // Pages a worker had not reached in its first pass by the pause were holes during the
    // first round: they must have gone as ZERO runs, not as read and sent zeros. (Whether
    // any are left depends on the machine's speed: a fast guest writes all in the warm-up.)
    const perWorker = pages / source.states.length;
    const unwritten = source.states.reduce((n, s) => n + (BigInt(s.pass) === 1n ? perWorker - s.index : 0), 0);
    if (unwritten > 0) assert.ok(source.zeroPages >= unwritten, `${unwritten} page(s) never written by the pause went as zero runs (${source.zeroPages})`);
    else t.diagnostic('every page was written before the pause: no zero runs to check this time');
    assertComplete(source, destination, pages);
  });

  test('MISSING on anonymous memory: 128 MiB, 2 vCPUs, post-copy right after the first round, not one write lost', async () => {
    const { source, destination } = await migrate_(['-s', 'anonymous', '-u', 'MISSING', '-b', '64M', '-v', '2', '--postcopy-now']);
    assert.equal(destination.mode, 'missing');
    assert.ok(destination.stalePages > 0);
    assert.equal(source.zeroPages, 0, 'private memory has no holes to ask about: every page is sent');
    assertComplete(source, destination, pages);
  });

  test('precopy rounds until the dirty set is small, both modes, switchover at a random moment', async () => {
    for (const [s, u] of [['shmem', 'MINOR'], ['anonymous', 'MISSING']] as const) {
      const after = 200 + Math.floor(Math.random() * 800);
      const { source, destination } = await migrate_(['-s', s, '-u', u, '-b', '32M', '-v', '2', '--postcopy-after', `${after}ms`, '--max-rounds', '8']);
      const pages = (64 * 2 ** 20) / 4096;
      // Precopy ended for the reason the policy gives, and the figures bear it out.
      const { reason, lastDirty } = source.switchover;
      assert.ok(source.rounds.length >= 1 && source.rounds.length <= 8, `1 to --max-rounds rounds, got ${source.rounds.length}`);
      if (reason === 'small-dirty-set') assert.ok(lastDirty <= 256, `switched on a small set, yet it held ${lastDirty}`);
      else if (reason === 'postcopy-after') assert.ok(source.precopyMs >= after, `switched on time after ${source.precopyMs} ms, before ${after} ms`);
      else if (reason === 'not-converging') {
        // The last round did not shrink the set: the look after it found ≥ 90% of what it sent.
        const last = source.rounds.at(-1)!;
        assert.ok(last.next && last.next.dirty >= 0.9 * last.pages, `switched for not converging after a round of ${last.pages} pages that left ${last.next?.dirty} dirty`);
      } else assert.equal(reason, 'max-rounds');
      if (reason === 'max-rounds') assert.equal(source.rounds.length, 8);
      else assert.ok(lastDirty <= 256 || source.precopyMs >= after || reason === 'not-converging', 'no reason to stop before the round limit');
      assertComplete(source, destination, pages);
    }
  });

  test('MINOR on shared hugetlbfs: 2 MiB pages move and resolve as units, not one write lost', async (t) => {
    // Both processes' memory: 64 MiB each.
    const skip = prepare('shared_hugetlb', 2 * 64 * 2 ** 20);
    if (skip) return t.skip(skip);
    const { source, destination } = await migrate_(['-s', 'shared_hugetlb', '-b', '32M', '-v', '2', '--postcopy-now']);
    assert.equal(destination.unit, 2 * 2 ** 20);
    assert.equal(destination.pages, 32, 'pages are counted in 2 MiB units');
    assert.equal(destination.oracle.checkedPages, (64 * 2 ** 20) / 4096, 'the oracle still checks every 4 KiB page');
    assert.equal(destination.oracle.lostWrites, 0);
    assert.equal(destination.oracle.guestMismatches, 0);
    assert.equal(destination.onDemandPages + destination.backgroundPages, destination.stalePages);
    assert.equal(source.stalePages, destination.stalePages);
  });

  test('--demo (the README\'s main job, small): both roles on loopback, one JSON with both sides, exit 0', async () => {
    const c = postcopy(['migrate', '--demo', '--json', '--guest', guest, '-b', '16M', '-v', '1', '--warmup', '100ms', '--run-after', '200ms']);
    assert.equal(await c.exited(), 0, c.stderr());
    const { source, destination } = JSON.parse(c.stdout()) as { source: SourceReport; destination: DestinationReport };
    assert.equal(destination.mode, 'minor');
    assert.equal(destination.source, 'shmem');
    assertComplete(source, destination, (16 * 2 ** 20) / 4096);
  });

  test('a slow background stream: workers fetch what they touch on demand, and still nothing is lost', async () => {
    // A short --timeout: the destination is silent on the main connection through post-copy
    // (its requests go on the urgent one), which must not count as silence. (Whether this
    // post-copy outlasts 3 s depends on how much the workers fetch on demand, unlimited.)
    const { source, destination } = await migrate_(['-s', 'shmem', '-b', '32M', '-v', '2', '--postcopy-now', '--bandwidth', '8M', '--timeout', '3s']);
    assert.ok(destination.onDemandPages > 0, 'some pages were requested by faulting vCPUs');
    assert.ok(destination.faults.forwarded > 0);
    assert.ok(destination.latencyMs.count > 0 && destination.latencyMs.max > 0, 'fault latency was measured');
    assertComplete(source, destination, (64 * 2 ** 20) / 4096);
  });
});
}

/** Connects, writes `bytes`, and resolves with what the peer sent back until it closed. */
function poke(port: number, bytes: Buffer, { end = true } = {}): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const s: Socket = connect(port, '127.0.0.1', () => {
      s.write(bytes);
      if (end) s.end();
    });
    s.on('data', (d) => chunks.push(d));
    s.on('error', reject);
    s.on('close', () => resolve(Buffer.concat(chunks)));
  });
}

function frame(type: number, payload: Buffer): Buffer {
  return Buffer.concat([encodeHeader(type, 0, payload.length), payload]);
}

function hello(overrides: Record<string, unknown> = {}): Buffer {
  return frame(
    FrameType.HELLO,
    Buffer.from(
      JSON.stringify({
        magic: PROTOCOL_MAGIC,
        version: PROTOCOL_VERSION,
        pageSize: 4096,
        memory: { guestAddress: 2 ** 32, size: 16 * 2 ** 20 },
        vcpus: 1,
        mode: 'minor',
        source: 'shmem',
        guest: 'threads',
        program: programOf('threads'),
        stateBytes: THREADS_STATE_BYTES,
        session: 'test',
        ...overrides,
      }),
    ),
  );
}

/** The message of the ERROR frame in `reply`. */
function errorIn(reply: Buffer): string {
  assert.ok(reply.length >= 8, 'the listener answered with a frame');
  assert.equal(reply.readUInt16LE(4), FrameType.ERROR, 'an ERROR frame');
  return (JSON.parse(reply.subarray(8, 8 + reply.readUInt32LE(0)).toString()) as { message: string }).message;
}

const SKIP = NO_UFFD;

describe('postcopy migrate receive: peers that do not speak the protocol', { skip: SKIP }, () => {
  test('random bytes, a truncated frame, a wrong version, an absurd length: each refused with a reason; then a real source migrates', async () => {
    const { child: dst, port } = await receiver(['--timeout', '2s']);
    let seed = 0x1234;
    const random = Buffer.from(Buffer.alloc(256, 0).map(() => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 16) & 0xff));
    await poke(port, random);
    await dst.waitFor(/refused [^\n]*unknown frame type|refused [^\n]*exceeds/);

    const truncated = hello().subarray(0, 40);
    await poke(port, truncated);
    await dst.waitFor(/refused [^\n]*(truncated|missing)/i);

    assert.match(errorIn(await poke(port, hello({ version: 99 }), { end: false })), new RegExp(`version 99, this side speaks ${PROTOCOL_VERSION}`));
    await dst.waitFor(/refused [^\n]*version 99/);

    assert.match(errorIn(await poke(port, hello({ mode: 'minor', source: 'anonymous' }), { end: false })), /MINOR faults need shared memory/);
    assert.match(errorIn(await poke(port, hello({ program: { name: 'migrate-threads/0', codeBytes: 0 } }), { end: false })), /guest program 'migrate-threads\/0'.*run the same postcopy version/);
    assert.match(errorIn(await poke(port, hello({ stateBytes: 8 }), { end: false })), /saves 8 bytes of state per worker/);

    const absurd = Buffer.alloc(8);
    absurd.writeUInt32LE(0xffff_ffff, 0);
    absurd.writeUInt16LE(FrameType.HELLO, 4);
    await poke(port, absurd);
    await dst.waitFor(/refused [^\n]*(exceeds|too large|limit)/i);

    // Still listening: a real migration goes through.
    const src = sender(port, ['-s', 'shmem', '-b', '16M', '-v', '1', '--postcopy-now'], 'threads');
    assert.equal(await src.exited(), 0, src.stderr());
    assert.equal(await dst.exited(), 0, dst.stderr());
    const d = JSON.parse(dst.stdout()) as DestinationReport;
    assert.equal(d.oracle.lostWrites, 0);
  });

  test('a source that goes silent after the handshake: the destination gives up within its timeout, exit 1, nothing run', async () => {
    const { child: dst, port } = await receiver(['--timeout', '1s']);
    const s = connect(port, '127.0.0.1');
    s.write(hello({ session: 'silent' }));
    s.on('error', () => undefined);
    await dst.waitFor(/accepted/);
    const code = await dst.exited(30_000);
    s.destroy();
    assert.equal(code, 1);
    assert.match(dst.stderr(), /postcopy: .*(urgent connection|no data|no frame)/);
    assert.equal(dst.stdout(), '', 'no report: the guest never ran');
  });
});

describe('postcopy migrate: a source that dies during post-copy', { skip: SKIP }, () => {
  test('the destination pauses, waits --recover-timeout for it, stays paused on the missing pages and exits 1 with a clear message', async () => {
    const { child: dst, port } = await receiver(['--timeout', '3s', '--recover-timeout', '2s']);
    // A slow background stream and enough memory keep post-copy going long enough to kill the source in it.
    const src = sender(port, ['-s', 'shmem', '-b', '128M', '-v', '2', '--postcopy-now', '--bandwidth', '1M'], 'threads');
    await src.waitFor(/switchover: \d+ stale/);
    await dst.waitFor(/resumed/);
    src.process.kill('SIGKILL');
    const code = await dst.exited(30_000);
    assert.equal(code, 1, dst.stderr());
    assert.match(dst.stderr(), /post-copy paused: /, 'the lost link paused post-copy first');
    assert.match(dst.stderr(), /did not resume it within 2000 ms.*page\(s\) never arrived, so the guest stays paused .* will not run on partial memory/);
    assert.doesNotMatch(dst.stderr(), /\n\s+at /, 'no stack trace');
    assert.equal(dst.stdout(), '', 'no report: the guest was not run on to a check');
  });
});

describe('postcopy migrate: a destination that dies during post-copy', { skip: SKIP }, () => {
  test('the source pauses, retries for --recover-timeout, then exits 1 naming the destination; its guest stays paused', async () => {
    const { child: dst, port } = await receiver(['--timeout', '3s']);
    // Large enough that the vCPUs' own requests (never rate-limited) cannot finish post-copy before the kill.
    const src = sender(port, ['-s', 'shmem', '-b', '128M', '-v', '2', '--postcopy-now', '--bandwidth', '1M', '--timeout', '3s', '--recover-timeout', '2s'], 'threads');
    await dst.waitFor(/resumed/);
    dst.process.kill('SIGKILL');
    const code = await src.exited(30_000);
    assert.equal(code, 1, src.stderr());
    assert.match(src.stderr(), /post-copy paused: /);
    assert.match(src.stderr(), /postcopy: .*the destination did not resume it within 2000 ms/);
    assert.doesNotMatch(src.stderr(), /\n\s+at /, 'no stack trace');
    assert.equal(src.stdout(), '', 'no report: the migration did not complete');
  });
});

describe('postcopy migrate: the command line', () => {
  const run = async (args: string[]) => {
    const c = postcopy(['migrate', ...args]);
    return { code: await c.exited(30_000), stderr: c.stderr() };
  };
  for (const [args, message] of [
    [[], /send`, `receive` or --demo/],
    [['send'], /--connect HOST:PORT is required/],
    [['send', '--connect', 'nowhere'], /--connect takes HOST:PORT/],
    [['send', '--connect', '127.0.0.1:1', '-s', 'anonymous', '-u', 'MINOR'], /MINOR needs shared memory/],
    [['receive', '--listen', '127.0.0.1:0', '-b', '1G'], /-b is for `migrate send`/],
    [['--demo', '--postcopy-after', 'soon'], /--postcopy-after takes a duration/],
    [['--demo', '-s', 'guest_memfd'], /guest_memfd/],
    [['--demo', '-s', 'nope'], /unknown backing source 'nope'.*shmem(?!.*guest_memfd)/],
    [['--demo', '--guest', 'qemu'], /--guest takes kvm or threads, got 'qemu'/],
    [['--demo', '--guest', 'threads', '--dirty-tracking', 'kvm-dirty-log'], /kvm-dirty-log needs --guest kvm/],
    [['receive', '--listen', '127.0.0.1:0', '--dirty-tracking', 'uffd-wp'], /--dirty-tracking is for `migrate send`/],
  ] as const) {
    test(`${args.join(' ') || '(nothing)'}: exit 2, one line naming the problem`, async () => {
      const r = await run([...args]);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, message);
      assert.equal(r.stderr.trimEnd().split('\n').length, 1, r.stderr);
    });
  }

  test('a source with no destination: exit 1, naming the address and what to start there', { skip: SKIP }, async () => {
    const r = await run(['send', '--connect', '127.0.0.1:1', '-b', '16M', '-v', '1', '--warmup', '0ms', '--guest', 'threads']);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /127\.0\.0\.1:1/);
    assert.match(r.stderr, /postcopy migrate receive --listen/);
  });
});

describe('postcopy migrate: both sides must run the same guest backend', { skip: SKIP }, () => {
  test('a destination started with --guest kvm refuses a threads source, saying so, and the source exits 1', async () => {
    const { child: dst, port } = await receiver(['--timeout', '2s'], 'kvm');
    const src = sender(port, ['-s', 'shmem', '-b', '16M', '-v', '1'], 'threads');
    assert.equal(await src.exited(), 1, src.stderr());
    assert.match(src.stderr(), /refused the migration: the source runs a threads guest, this destination was started with --guest kvm/);
    await dst.waitFor(/refused [^\n]*threads guest/);
    dst.process.kill('SIGTERM');
    await dst.exited();
  });
});
