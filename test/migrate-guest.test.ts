/**
 * The pieces a migration is made of, each against the real kernel where it has one: the
 * migrate guest program (its bytes against its listing; running, pausing, resuming; the
 * guest and the host oracle both catching a lost write), KVM dirty logging with manual
 * clearing, and the protocol's checks of what a peer sends.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { describe, test } from 'node:test';
import { MigrationGuest } from '../src/apps/migrate/guest.js';
import { MigrationProtocolError, PROTOCOL_MAGIC, PROTOCOL_VERSION, encodeZero, parseHello, parsePages, parseRequest, parseZero } from '../src/apps/migrate/protocol.js';
import { UnitBitmap } from '../src/apps/migrate/stale-set.js';
import { encodeSwitchover, parseSwitchover } from '../src/apps/migrate/switchover.js';
import { GuestPort } from '../src/kvm/guest/program.js';
import { MIGRATE_PROGRAM, checkCounters } from '../src/kvm/guest/migrate-program.js';
import { Kvm } from '../src/kvm/system.js';
import { Backing } from '../src/memory/backing.js';
import { assemble, missingBinutils } from './helpers/assemble.js';

const NO_KVM = existsSync('/dev/kvm') ? undefined : '/dev/kvm is missing: load kvm_intel or kvm_amd to run the guest';
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
    const kvm = Kvm.open();
    const guest = MigrationGuest.create(kvm, { source: 'shmem', size: 8 * 2 ** 20, vcpus: 2, guestAddress: 2 ** 32 }, { dirtyLog: true });
    try {
      const counters = guest.counters(guest.backing.alias!.bytes());
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
      kvm.close();
    }
  });

  test('dirty logging with manual clear: everything is dirty at first; after a clear, only what the guest wrote since', async () => {
    const kvm = Kvm.open();
    const guest = MigrationGuest.create(kvm, { source: 'anonymous', size: 4 * 2 ** 20, vcpus: 1, guestAddress: 2 ** 32 }, { dirtyLog: true });
    try {
      const log = guest.log!;
      assert.equal(log.fetch(), log.pages, 'initially set: every page is dirty');
      log.clear();
      assert.equal(log.fetch(), 0, 'cleared, with the guest not running: nothing dirty');
      await guest.run();
      await new Promise((r) => setTimeout(r, 100));
      await guest.pause();
      const dirty = log.fetch();
      assert.ok(dirty > 0 && dirty <= log.pages, `the guest dirtied ${dirty} of ${log.pages} pages`);
      log.clear();
      assert.equal(log.fetch(), 0);
    } finally {
      guest.close();
      kvm.close();
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
  const good = { magic: PROTOCOL_MAGIC, version: PROTOCOL_VERSION, pageSize: 4096, memory: { guestAddress: 2 ** 32, size: 2 ** 24 }, vcpus: 2, mode: 'minor', source: 'shmem', program: { name: 'migrate', codeBytes: 1 }, session: 'x' };
  const helloOf = (o: Record<string, unknown>) => Buffer.from(JSON.stringify({ ...good, ...o }));
  for (const [field, value, message] of [
    ['magic', 'http', /not a postcopy migration/],
    ['version', 2, /protocol version 2, this side speaks 1/],
    ['pageSize', 3000, /page size 3000/],
    ['memory', { guestAddress: 1, size: 4096 }, /page-aligned/],
    ['vcpus', 0, /vcpus 0/],
    ['mode', 'sideways', /mode "sideways"/],
    ['session', '', /session/],
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
    const vcpus = [{ regs: new Uint8Array(144).fill(1), sregs: new Uint8Array(312).fill(2) }];
    const payload = Buffer.concat(encodeSwitchover({ pausedAtNs: 5n, tsc: 7n, tscKhz: 1000, wallMs: 1, vcpus, stale: stale.bytes, stalePages: 2 }));
    const s = parseSwitchover(payload, { vcpus: 1, pages: 100 });
    assert.deepEqual([s.pausedAtNs, s.tsc, s.stalePages, s.vcpus[0]!.regs[0], s.vcpus[0]!.sregs[311]], [5n, 7n, 2, 1, 2]);
    assert.deepEqual([...new UnitBitmap(100, s.stale).runs(8)], [[3, 1], [99, 1]]);
    assert.throws(() => parseSwitchover(payload, { vcpus: 2, pages: 100 }), /state for 1 vCPUs, the handshake agreed on 2/);
    assert.throws(() => parseSwitchover(payload, { vcpus: 1, pages: 200 }), /stale bitmap/);
    assert.throws(() => parseSwitchover(payload.subarray(0, payload.length - 1), { vcpus: 1, pages: 100 }), /bytes, expected/);
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
