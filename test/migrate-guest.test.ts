/**
 * The pieces a migration is made of, each against the real kernel where it has one: the
 * migrate guest program (its bytes against its listing; running, pausing, resuming; the
 * guest and the host oracle both catching a lost write), KVM dirty logging with manual
 * clearing, and the protocol's checks of what a peer sends.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { KvmGuest } from '../src/guest/kvm/kvm-guest.js';
import { kvmAvailability } from '../src/guest/open.js';
import { KvmDirtyLogTracker } from '../src/tracking/kvm-dirty-log.js';
import {
  encodeResumeAck,
  parseResume,
  parseResumeAck,
  FrameType,
  MigrationProtocolError,
  PROTOCOL_MAGIC,
  PROTOCOL_VERSION,
  encodeZero,
  parseAccept,
  parseComplete,
  parseHello,
  parsePages,
  parseRequest,
  parseResumed,
  parseRoundAck,
  parseRoundEnd,
  parseUrgent,
  parseZero,
} from '../src/apps/migrate/protocol.js';
import { Session } from '../src/apps/migrate/session.js';
import { UnitBitmap } from '../src/apps/migrate/stale-set.js';
import { encodeSwitchover, parseSwitchover } from '../src/apps/migrate/switchover.js';
import { GuestPort } from '../src/kvm/guest/program.js';
import { MIGRATE_PROGRAM, checkCounters } from '../src/kvm/guest/migrate-program.js';
import { Backing } from '../src/memory/backing.js';
import { countBits } from '../src/kvm/dirty-log.js';
import { assemble, missingBinutils } from './helpers/assemble.js';

const kvm = kvmAvailability();
const NO_KVM = kvm.usable ? undefined : `no usable KVM: ${kvm.reason}`;
if (NO_KVM) console.log(`# skipping the KVM guest: ${NO_KVM}`);
const NO_BINUTILS = missingBinutils();

describe('the migrate program', () => {
  test('its embedded bytes and symbols are what `as` makes of its listing', { skip: NO_BINUTILS }, () => {
    const { code, symbols: sym } = assemble(MIGRATE_PROGRAM.listing);
    assert.equal(Buffer.from(MIGRATE_PROGRAM.code).toString('hex'), code.toString('hex'), 'MIGRATE_CODE_HEX is stale: re-assemble the listing');
    assert.equal(sym.get('entry'), MIGRATE_PROGRAM.symbols.entry);
    assert.equal(sym.get('exception_stubs'), MIGRATE_PROGRAM.symbols.exception_stubs);
    assert.equal(sym.get('PORT_PAUSE'), GuestPort.PAUSE);
    assert.equal(sym.get('PORT_EXCEPTION'), GuestPort.EXCEPTION);
  });

  test('the oracle: pages before the position hold the pass, the rest one less; anything else is counted', () => {
    const counters = [3n, 3n, 2n, 2n];
    assert.deepEqual(checkCounters({ pass: 3n, index: 2 }, 4, (p) => counters[p]!), { bad: 0, first: [] });
    counters[1] = 2n; // a write the destination lost
    counters[3] = 3n; // a write from nowhere
    const r = checkCounters({ pass: 3n, index: 2 }, 4, (p) => counters[p]!);
    assert.equal(r.bad, 2);
    assert.deepEqual(r.first.map((b) => [b.page, b.found, b.expected]), [[1, 2n, 3n], [3, 3n, 2n]]);
  });
});

describe('a migrating guest on KVM', { skip: NO_KVM }, () => {
  test('runs, pauses between two accesses, resumes where it stopped; the guest and the oracle both catch a lost write', async () => {
    const guest = KvmGuest.create({ source: 'shmem', size: 8 * 2 ** 20, vcpus: 2, guestAddress: 2 ** 32 }, { tracking: 'kvm-dirty-log' });
    try {
      const alias = guest.backing.alias!.bytes();
      const counters = new BigUint64Array(alias.buffer, alias.byteOffset, alias.byteLength / 8);
      const pages = guest.slice(0).pages;
      const oracle = () =>
        guest.states().reduce((n, s, i) => n + checkCounters(s, pages, (p) => counters[((i * pages + p) * 4096) / 8]!).bad, 0);

      await guest.run();
      await new Promise((r) => setTimeout(r, 200));
      await guest.pause();
      const first = guest.states();
      for (const s of first) {
        assert.ok(s.pass >= 1n && s.index >= 0 && s.index < pages);
        assert.equal(s.mismatches, 0);
      }
      assert.equal(oracle(), 0);

      // Resume: the same registers go on; the passes only grow.
      await guest.run();
      await new Promise((r) => setTimeout(r, 100));
      await guest.pause();
      guest.states().forEach((s, i) => assert.ok(s.pass * BigInt(pages) + BigInt(s.index) > first[i]!.pass * BigInt(pages) + BigInt(first[i]!.index)));
      assert.equal(oracle(), 0);

      // Lose a write: set a page behind vCPU 0's position back by one. The host sees it now;
      // the guest sees it when its next pass reads that page.
      const s0 = guest.states()[0]!;
      const victim = s0.index > 0 ? 0 : pages - 1;
      counters[(victim * 4096) / 8] = counters[(victim * 4096) / 8]! - 1n;
      assert.equal(oracle(), 1);
      await guest.run();
      await new Promise((r) => setTimeout(r, 300));
      await guest.pause();
      assert.ok(guest.states()[0]!.mismatches >= 1, 'the guest counted the lost write');
      assert.equal(guest.states()[0]!.firstMismatch, guest.slice(0).guestAddress + victim * 4096);
    } finally {
      guest.close();
    }
  });

  test('dirty logging with manual clear: everything is dirty at first; after a clear, only what the guest wrote since', async () => {
    const guest = KvmGuest.create({ source: 'anonymous', size: 4 * 2 ** 20, vcpus: 1, guestAddress: 2 ** 32 }, { tracking: 'kvm-dirty-log' });
    try {
      const tracker = guest.tracker!;
      assert.ok(tracker instanceof KvmDirtyLogTracker);
      assert.equal(countBits(tracker.collect()), tracker.pages, 'initially set: every page is dirty');
      assert.equal(countBits(tracker.collect()), 0, 'collected, with the guest not running: nothing dirty');
      await guest.run();
      await new Promise((r) => setTimeout(r, 100));
      await guest.pause();
      const dirty = countBits(tracker.collect());
      assert.ok(dirty > 0 && dirty <= tracker.pages, `the guest dirtied ${dirty} of ${tracker.pages} pages`);
      assert.equal(countBits(tracker.collect()), 0);
    } finally {
      guest.close();
    }
  });
});

describe('holes: pages never written are found without touching them', () => {
  test('shmem: SEEK_DATA finds the first written page; private memory is all data', () => {
    const shm = Backing.create('shmem', 2 ** 20);
    const anon = Backing.create('anonymous', 2 ** 20);
    try {
      assert.equal(shm.nextData(0), shm.size, 'a new memfd is one hole');
      shm.alias!.bytes()[3 * 4096 + 5] = 1;
      assert.equal(shm.nextData(0), 3 * 4096);
      assert.equal(shm.nextData(3 * 4096), 3 * 4096);
      assert.equal(shm.nextData(4 * 4096), shm.size);
      assert.equal(anon.nextData(8192), 8192);
    } finally {
      shm.close();
      anon.close();
    }
  });
});

describe('what a peer sends is checked before it is used', () => {
  const good = { magic: PROTOCOL_MAGIC, version: PROTOCOL_VERSION, pageSize: 4096, memory: { guestAddress: 2 ** 32, size: 2 ** 24 }, vcpus: 2, mode: 'minor', source: 'shmem', guest: 'threads', program: { name: 'migrate', codeBytes: 1 }, stateBytes: 56, session: 'x' };
  const helloOf = (o: Record<string, unknown>) => Buffer.from(JSON.stringify({ ...good, ...o }));
  for (const [field, value, message] of [
    ['magic', 'http', /not a postcopy migration/],
    ['version', 2, /protocol version 2, this side speaks 3/],
    ['pageSize', 3000, /page size 3000/],
    ['memory', { guestAddress: 1, size: 4096 }, /page-aligned/],
    ['vcpus', 0, /vcpus 0/],
    ['mode', 'sideways', /mode "sideways"/],
    ['session', '', /session/],
    ['guest', 'qemu', /guest "qemu" is not one of kvm, threads/],
    ['stateBytes', 0, /stateBytes 0/],
  ] as const) {
    test(`HELLO with ${field} ${JSON.stringify(value)} is refused`, () => {
      assert.throws(() => parseHello(helloOf({ [field]: value })), (e: unknown) => e instanceof MigrationProtocolError && message.test(e.message));
    });
  }
  test('HELLO that is not JSON is refused', () => assert.throws(() => parseHello(Buffer.from('{')), /not JSON/));
  test('a well-formed HELLO is taken as it is', () => assert.equal(parseHello(helloOf({})).vcpus, 2));

  const memory = { guestAddress: 2 ** 32, size: 2 ** 24 };
  test('PAGES outside the guest, misaligned, or not whole pages are refused', () => {
    const pages = (a: number, bytes: number) => Buffer.concat([Buffer.from(new BigUint64Array([BigInt(a)]).buffer), Buffer.alloc(bytes)]);
    assert.equal(parsePages(pages(2 ** 32 + 4096, 8192), 4096, memory).data.byteLength, 8192);
    assert.throws(() => parsePages(pages(2 ** 32 + memory.size, 4096), 4096, memory), /outside the guest's memory/);
    assert.throws(() => parsePages(pages(2 ** 32 + 1, 4096), 4096, memory), /misaligned/);
    assert.throws(() => parsePages(pages(2 ** 32, 100), 4096, memory), /whole 4096-byte pages/);
    assert.throws(() => parseRequest(Buffer.alloc(7), 4096, memory), /not 8/);
    assert.deepEqual(parseZero(encodeZero(2 ** 32, 8192), 4096, memory), { guestAddress: 2 ** 32, length: 8192 });
    assert.throws(() => parseZero(encodeZero(2 ** 32, 0), 4096, memory), /outside the guest's memory or misaligned/);
    assert.throws(() => parseZero(encodeZero(2 ** 32 + memory.size - 4096, 8192), 4096, memory), /outside the guest's memory/);
    assert.throws(() => parseZero(Buffer.alloc(15), 4096, memory), /not 16/);
    assert.throws(() => parseRequest(Buffer.from(new BigUint64Array([0n]).buffer), 4096, memory), /not a page of the guest/);
  });

  test('SWITCHOVER round-trips, and one for another guest shape is refused', () => {
    const stale = new UnitBitmap(100);
    stale.set(3);
    stale.set(99);
    const state = new Uint8Array(456);
    state[0] = 1;
    state[455] = 2;
    const payload = Buffer.concat(encodeSwitchover({ pausedAtNs: 5n, clock: 7n, ticksPerMs: 1000, wallMs: 1, states: [state], stale: stale.bytes, stalePages: 2 }));
    const expect = { workers: 1, stateBytes: 456, pages: 100 };
    const s = parseSwitchover(payload, expect);
    assert.deepEqual([s.pausedAtNs, s.clock, s.stalePages, s.states[0]![0], s.states[0]![455]], [5n, 7n, 2, 1, 2]);
    assert.deepEqual([...new UnitBitmap(100, s.stale).runs(8)], [[3, 1], [99, 1]]);
    assert.throws(() => parseSwitchover(payload, { ...expect, workers: 2 }), /state for 1 workers, the handshake agreed on 2/);
    assert.throws(() => parseSwitchover(payload, { ...expect, pages: 200 }), /stale bitmap/);
    assert.throws(() => parseSwitchover(payload, { ...expect, stateBytes: 56 }), /bytes, expected/);
    assert.throws(() => parseSwitchover(payload.subarray(0, payload.length - 1), expect), /bytes, expected/);
  });

  test('dirty 4 KiB pages become dirty 2 MiB units; runs stop at gaps and at the length limit', () => {
    const words = new BigUint64Array(16); // 1024 pages
    words[0] = 1n; // page 0
    words[8] = 1n << 63n; // page 575
    const units = UnitBitmap.fromDirtyLog(words, 1024, 512);
    assert.deepEqual([units.has(0), units.has(1), units.count()], [true, true, 2]);
    const four = UnitBitmap.fromDirtyLog(words, 1024, 1);
    assert.deepEqual([...four.runs(64)], [[0, 1], [575, 1]]);
    // Set bits on both sides of the 256-byte stretches that are skipped with one compare.
    const sparse = new UnitBitmap(300 * 8 + 5);
    const at = [0, 7, 255 * 8 + 7, 256 * 8, 299 * 8, 300 * 8 + 4];
    for (const u of at) sparse.set(u);
    const found: number[] = [];
    for (let u = sparse.next(0); u >= 0; u = sparse.next(u + 1)) found.push(u);
    assert.deepEqual(found, at);
    assert.equal(sparse.count(), at.length);
    assert.equal(sparse.next(300 * 8 + 5), -1);
    const all = new UnitBitmap(10);
    for (let u = 0; u < 10; u++) all.set(u);
    assert.deepEqual([...all.runs(4)], [[0, 4], [4, 4], [8, 2]]);
  });
});

describe('control payloads are parsed field by field', () => {
  const json = (v: unknown) => Buffer.from(JSON.stringify(v));
  // Each row: a parser, a payload a peer might send, and what the refusal must say.
  const cases: [string, () => unknown, RegExp][] = [
    ['ROUND_END that is not JSON', () => parseRoundEnd(Buffer.from('{"round":')), /ROUND_END frame: payload is not JSON/],
    ['ROUND_END without pages', () => parseRoundEnd(json({ round: 1 })), /ROUND_END frame: pages undefined is not a page count/],
    ['ROUND_END with round 0', () => parseRoundEnd(json({ round: 0, pages: 1 })), /round 0 is not a round number/],
    ['a ROUND_END acknowledgement of round "2"', () => parseRoundAck(json({ round: '2' })), /round "2" is not a round number/],
    ['RESUMED with a number for its time', () => parseResumed(json({ resumedAtNs: 12 })), /RESUMED frame: resumedAtNs 12 is not a decimal string/],
    ['RESUMED that is an array', () => parseResumed(json([1])), /not a JSON object/],
    ['URGENT without a session', () => parseUrgent(json({})), /URGENT frame: session undefined/],
    ['COMPLETE for another page count', () => parseComplete(json({ pages: 3 }), 4), /COMPLETE frame: pages 3/],
    ['ACCEPT of another version', () => parseAccept(json({ version: 1 })), /ACCEPT frame: version 1/],
  ];
  for (const [what, parse, message] of cases) {
    test(`${what} is a protocol error`, () => assert.throws(parse, (e: unknown) => e instanceof MigrationProtocolError && message.test(e.message)));
  }
  test('well-formed payloads are taken', () => {
    assert.deepEqual(parseRoundEnd(json({ round: 2, pages: 7 })), { round: 2, pages: 7 });
    assert.deepEqual(parseResumed(json({ resumedAtNs: '123456789012' })), { resumedAtNs: 123456789012n });
    assert.deepEqual(parseUrgent(json({ session: 'abc' })), { session: 'abc' });
  });
});

describe('the session states admit only the frames of their state', () => {
  const frame = (type: number) => ({ type, flags: 0, payload: Buffer.alloc(0) });
  test('destination: PAGES in precopy, not in handshake; REQUEST never; SWITCHOVER once', () => {
    const s = new Session('destination');
    assert.throws(() => s.admit('main', frame(FrameType.PAGES)), /a PAGES frame from the source on the main connection while in handshake/);
    s.enter('precopy');
    s.admit('main', frame(FrameType.PAGES));
    s.admit('main', frame(FrameType.SWITCHOVER));
    assert.throws(() => s.admit('urgent', frame(FrameType.PAGES)), /on the urgent connection while in precopy/, 'a requested page before the switchover');
    assert.throws(() => s.admit('main', frame(FrameType.REQUEST)), /REQUEST/);
    s.enter('switching');
    assert.throws(() => s.admit('main', frame(FrameType.SWITCHOVER)), /a SWITCHOVER frame .* while in switching/, 'a second SWITCHOVER');
    assert.throws(() => s.admit('main', frame(FrameType.ZERO)), /ZERO/, 'no zero runs after the switchover');
    s.enter('postcopy');
    s.admit('urgent', frame(FrameType.PAGES));
    s.enter('complete');
    s.admit('main', frame(FrameType.PAGES)); // crossed COMPLETE: dropped, not an error
  });
  test('source: REQUEST only in post-copy; RESUMED not during precopy', () => {
    const s = new Session('source');
    s.admit('main', frame(FrameType.ACCEPT));
    s.enter('precopy');
    assert.throws(() => s.admit('main', frame(FrameType.RESUMED)), /RESUMED frame from the destination on the main connection while in precopy/);
    assert.throws(() => s.admit('urgent', frame(FrameType.REQUEST)), /REQUEST/);
    s.enter('switching');
    s.enter('postcopy');
    s.admit('urgent', frame(FrameType.REQUEST));
    s.admit('main', frame(FrameType.COMPLETE));
  });
  test('post-copy recovery: paused admits nothing; recovering admits only the resume handshake; then post-copy again', () => {
    const d = new Session('destination');
    assert.throws(() => d.enter('paused'), /handshake → paused is not a transition/, 'nothing to pause before the guest moved');
    d.enter('precopy');
    assert.throws(() => d.enter('paused'), /precopy → paused/, 'a link lost in precopy fails: the source still runs the guest');
    d.enter('switching');
    d.enter('postcopy');
    d.enter('paused');
    assert.throws(() => d.admit('main', frame(FrameType.PAGES)), /PAGES frame .* while in paused/, 'an old connection\'s page is not taken while paused');
    d.enter('recovering');
    d.admit('main', frame(FrameType.RESUME));
    d.admit('urgent', frame(FrameType.URGENT));
    assert.throws(() => d.admit('main', frame(FrameType.HELLO)), /HELLO frame .* while in recovering/, 'a new migration is not a resume');
    d.enter('paused'); // lost again while recovering
    d.enter('recovering');
    d.enter('postcopy');
    d.enter('complete');
    const s = new Session('source');
    s.enter('precopy');
    s.enter('switching');
    s.enter('paused'); // lost while the switchover was in flight
    s.enter('recovering');
    s.admit('main', frame(FrameType.RESUME_ACK));
    assert.throws(() => s.admit('urgent', frame(FrameType.REQUEST)), /REQUEST frame .* while in recovering/);
  });
  test('RESUME and RESUME_ACK are checked field by field', () => {
    const json = (v: unknown) => Buffer.from(JSON.stringify(v));
    assert.deepEqual(parseResume(json({ session: 'abc', attempt: 2 })), { session: 'abc', attempt: 2 });
    assert.throws(() => parseResume(json({ session: 'abc', attempt: 0 })), /RESUME frame: attempt 0/);
    assert.throws(() => parseResume(json({ attempt: 1 })), /RESUME frame: session/);
    const bitmap = new UnitBitmap(20);
    bitmap.set(3);
    bitmap.set(19);
    const ack = Buffer.concat(encodeResumeAck(2, bitmap.bytes));
    const back = parseResumeAck(ack, 20);
    assert.equal(back.needed, 2);
    assert.deepEqual([...back.bitmap], [...bitmap.bytes]);
    assert.throws(() => parseResumeAck(ack, 40), /does not hold a .* bitmap of 40 pages/, 'a bitmap of another guest size');
    assert.throws(() => parseResumeAck(Buffer.concat(encodeResumeAck(21, bitmap.bytes)), 20), /needed 21 is not a page count ≤ 20/);
  });
  test('transitions follow the migration; a failure is kept and later ones do not replace it', () => {
    const s = new Session('source');
    assert.throws(() => s.enter('postcopy'), /handshake → postcopy is not a transition/);
    const first = new Error('first');
    assert.equal(s.fail(first), first);
    assert.equal(s.fail(new Error('second')), first);
    assert.equal(s.state, 'failed');
    assert.throws(() => s.admit('main', frame(FrameType.ERROR)), /while failed/);
    assert.deepEqual(s.history.map((e) => e.to), ['failed']);
  });
});
