/**
 * The transport: frames cut from a byte stream however it is chunked, bad streams refused
 * at their first header, and every way a TCP conversation can break (garbage, truncation,
 * silence, reset, a throwing handler) ending the channel with a named error instead of a
 * hang or a crash. Real TCP sockets on 127.0.0.1.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { describe, test } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import {
  Channel,
  DEFAULT_MAX_PAYLOAD,
  FRAME_HEADER_SIZE,
  FrameDecoder,
  Listener,
  encodeHeader,
  type ChannelOptions,
  type Frame,
} from '../src/transport/index.js';

const HELLO = 1;
const PAGE = 2;
const DONE = 3;
const KNOWN = new Set([HELLO, PAGE, DONE]);
const OPTIONS: ChannelOptions = { isKnownType: KNOWN };
const LIMIT = { timeout: 30_000 };

/** mulberry32: the same bytes on every run, so a failure can be replayed. */
function random(seed: number): (bytes: number) => Buffer {
  let a = seed >>> 0;
  const next = (): number => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
  return (bytes) => {
    const out = Buffer.alloc(bytes);
    for (let i = 0; i < bytes; i++) out[i] = next() & 0xff;
    return out;
  };
}

function encode(type: number, flags: number, payload: Uint8Array): Buffer {
  return Buffer.concat([encodeHeader(type, flags, payload.length), payload]);
}

/** The frames every round-trip test sends: empty, one byte, a page, and more than 1 MiB. */
function sampleFrames(): Frame[] {
  const bytes = random(7);
  return [
    { type: HELLO, flags: 0, payload: Buffer.alloc(0) },
    { type: PAGE, flags: 0xffff, payload: bytes(1) },
    { type: PAGE, flags: 1, payload: bytes(4096) },
    { type: PAGE, flags: 2, payload: bytes(2 ** 20 + 3) },
    { type: DONE, flags: 0, payload: Buffer.alloc(0) },
  ];
}

function assertFrames(actual: readonly Frame[], expected: readonly Frame[]): void {
  assert.equal(actual.length, expected.length);
  actual.forEach((f, i) => {
    assert.equal(f.type, expected[i]!.type, `frame ${i} type`);
    assert.equal(f.flags, expected[i]!.flags, `frame ${i} flags`);
    assert.ok(f.payload.equals(expected[i]!.payload), `frame ${i} payload (${f.payload.length} vs ${expected[i]!.payload.length} bytes)`);
  });
}

function decodeInChunks(stream: Buffer, sizes: () => number): Frame[] {
  const decoder = new FrameDecoder({ isKnownType: KNOWN });
  const out: Frame[] = [];
  for (let off = 0; off < stream.length; ) {
    const n = Math.min(sizes(), stream.length - off);
    decoder.push(stream.subarray(off, off + n), out);
    off += n;
  }
  decoder.end();
  return out;
}

/** What a decoder must say about a stream: walk its headers as the format defines them. */
function expectedRefusal(stream: Buffer): string | undefined {
  for (let off = 0; off + FRAME_HEADER_SIZE <= stream.length; ) {
    const length = stream.readUInt32LE(off);
    if (!KNOWN.has(stream.readUInt16LE(off + 4))) return 'ERR_UNKNOWN_FRAME';
    if (length > DEFAULT_MAX_PAYLOAD) return 'ERR_FRAME_TOO_LARGE';
    off += FRAME_HEADER_SIZE + length;
  }
  return undefined;
}

function codeOfError(e: unknown): string | undefined {
  return (e as { code?: string } | undefined)?.code;
}

function codeOf(f: () => unknown): string | undefined {
  try {
    f();
    return undefined;
  } catch (e) {
    return (e as { code?: string }).code;
  }
}

describe('FrameDecoder', () => {
  test('frames decode the same whole, byte by byte, and in random chunks', () => {
    const frames = sampleFrames();
    const stream = Buffer.concat(frames.map((f) => encode(f.type, f.flags, f.payload)));
    assertFrames(decodeInChunks(stream, () => stream.length), frames);
    const sizes = random(11);
    assertFrames(decodeInChunks(stream, () => 1 + (sizes(2).readUInt16LE(0) % 70_000)), frames);
    // Byte by byte through the small frames; the 1 MiB one byte by byte would only be slow.
    const small = Buffer.concat(frames.filter((f) => f.payload.length <= 4096).map((f) => encode(f.type, f.flags, f.payload)));
    assertFrames(decodeInChunks(small, () => 1), frames.filter((f) => f.payload.length <= 4096));
  });

  test('a frame that lies inside one chunk is a view of the chunk, not a copy', () => {
    const chunk = Buffer.concat([encode(PAGE, 0, Buffer.alloc(4096, 1)), encode(PAGE, 0, Buffer.alloc(4096, 2))]);
    const frames = new FrameDecoder({ isKnownType: KNOWN }).push(chunk);
    assert.equal(frames.length, 2);
    for (const f of frames) assert.equal(f.payload.buffer, chunk.buffer);
  });

  test('a payload of exactly maxPayload is accepted; one byte more is ERR_FRAME_TOO_LARGE naming both', () => {
    const ok = new FrameDecoder({ isKnownType: KNOWN, maxPayload: 100 }).push(encode(PAGE, 0, Buffer.alloc(100)));
    assert.equal(ok[0]!.payload.length, 100);
    const decoder = new FrameDecoder({ isKnownType: KNOWN, maxPayload: 100 });
    assert.throws(() => decoder.push(encodeHeader(PAGE, 0, 101)), { name: 'ProtocolError', code: 'ERR_FRAME_TOO_LARGE', message: /101 payload bytes.*limit of 100/ });
  });

  test('an absurd length (0xffffffff) is refused at its header, without allocating it', () => {
    const before = process.memoryUsage().arrayBuffers;
    const decoder = new FrameDecoder({ isKnownType: KNOWN });
    assert.throws(() => decoder.push(encodeHeader(PAGE, 0, 0xffffffff)), { code: 'ERR_FRAME_TOO_LARGE', message: /4294967295 .*16777216 \(16 MiB\)/ });
    assert.ok(process.memoryUsage().arrayBuffers - before < 2 ** 30, 'nothing near 4 GiB was allocated');
  });

  test('an unknown type is ERR_UNKNOWN_FRAME with the type in hex; a predicate works as well as a set', () => {
    const decoder = new FrameDecoder({ isKnownType: (t) => t < 0x10 });
    assert.throws(() => decoder.push(encodeHeader(0xbeef, 0, 0)), { code: 'ERR_UNKNOWN_FRAME', message: /0xbeef/ });
  });

  test('random bytes are refused with the code a walk of their headers predicts', () => {
    const seen = new Set<string>();
    for (let seed = 1; seed <= 40; seed++) {
      const stream = random(seed)(4096);
      // Every other stream starts with a known type, so its random length is what gets judged.
      if (seed % 2 === 0) stream.writeUInt16LE(PAGE, 4);
      const expected = expectedRefusal(stream);
      assert.ok(expected, `seed ${seed}: random bytes must not pass as frames`);
      assert.equal(codeOf(() => new FrameDecoder({ isKnownType: KNOWN }).push(stream)), expected, `seed ${seed}`);
      seen.add(expected);
    }
    assert.deepEqual([...seen].sort(), ['ERR_FRAME_TOO_LARGE', 'ERR_UNKNOWN_FRAME']);
  });

  test('after an error the decoder is poisoned; frames before the bad one are kept', () => {
    const decoder = new FrameDecoder({ isKnownType: KNOWN });
    const out: Frame[] = [];
    let first: unknown;
    try {
      decoder.push(Buffer.concat([encode(DONE, 0, Buffer.from('bye')), encodeHeader(0x77, 0, 0)]), out);
    } catch (e) {
      first = e;
    }
    assert.equal(out.length, 1, 'the DONE frame before the garbage');
    assert.equal((first as { code: string }).code, 'ERR_UNKNOWN_FRAME');
    assert.throws(() => decoder.push(encode(HELLO, 0, Buffer.alloc(0))), (e) => e === first);
    assert.throws(() => decoder.end(), (e) => e === first);
  });

  test('end() inside a frame is ERR_TRUNCATED saying what is missing; between frames it is fine', () => {
    const inPayload = new FrameDecoder({ isKnownType: KNOWN });
    inPayload.push(encode(PAGE, 0, Buffer.alloc(4096)).subarray(0, FRAME_HEADER_SIZE + 100));
    assert.throws(() => inPayload.end(), { code: 'ERR_TRUNCATED', message: /type 0x0002: 3996 of its 4096 payload bytes missing/ });
    const inHeader = new FrameDecoder({ isKnownType: KNOWN });
    inHeader.push(Buffer.alloc(3));
    assert.throws(() => inHeader.end(), { code: 'ERR_TRUNCATED', message: /header: 5 of its 8 bytes missing/ });
    const clean = new FrameDecoder({ isKnownType: KNOWN });
    clean.push(encode(HELLO, 0, Buffer.alloc(10)));
    clean.end();
    clean.end();
  });
});

/** A listener, a connected client channel and the accepted server channel; all closed after `body`. */
async function withPair(
  body: (client: Channel, server: Channel) => Promise<void>,
  clientOptions: Partial<ChannelOptions> = {},
  serverOptions: Partial<ChannelOptions> = {},
): Promise<void> {
  const listener = await Listener.listen('127.0.0.1', 0);
  let client: Channel | undefined;
  let server: Channel | undefined;
  try {
    const accepted = listener.accept();
    client = await Channel.connect('127.0.0.1', listener.address.port, { ...OPTIONS, name: 'client', ...clientOptions });
    server = Channel.fromSocket(await accepted, { ...OPTIONS, name: 'server', ...serverOptions });
    await body(client, server);
  } finally {
    client?.destroy();
    server?.destroy();
    await listener.close();
  }
}

/** A channel on the accepting side and a raw socket as its peer, to send what a Channel never would. */
async function withRawPeer(body: (channel: Channel, raw: net.Socket) => Promise<void>, options: Partial<ChannelOptions> = {}): Promise<void> {
  const listener = await Listener.listen('127.0.0.1', 0);
  const raw = net.connect(listener.address.port, '127.0.0.1');
  raw.on('error', () => {});
  try {
    const channel = Channel.fromSocket(await listener.accept(), { ...OPTIONS, name: 'receiver', ...options });
    try {
      await body(channel, raw);
    } finally {
      channel.destroy();
    }
  } finally {
    raw.destroy();
    await listener.close();
  }
}

function collect(channel: Channel, count: number): Promise<Frame[]> {
  const frames: Frame[] = [];
  return new Promise((resolve) =>
    channel.onFrame((f) => {
      frames.push(f);
      if (frames.length === count) resolve(frames);
    }),
  );
}

/** Whether `p` settles within `ms`: for "has not failed" checks, never for "how fast". */
async function settlesWithin(p: Promise<unknown>, ms: number): Promise<boolean> {
  return Promise.race([p.then(() => true), delay(ms).then(() => false)]);
}

describe('Channel', () => {
  test('frames round-trip in order: 0 B, 1 B, 4 KiB, 1 MiB + 3 (many TCP chunks); stats count them', LIMIT, () =>
    withPair(async (client, server) => {
      const frames = sampleFrames();
      const received = collect(server, frames.length);
      for (const f of frames) client.send(f.type, f.flags, f.payload);
      assertFrames(await received, frames);
      const bytes = frames.reduce((n, f) => n + FRAME_HEADER_SIZE + f.payload.length, 0);
      assert.equal(client.framesSent, frames.length);
      assert.equal(server.framesReceived, frames.length);
      assert.equal(client.bytesSent, bytes);
      assert.equal(server.bytesReceived, bytes);
    }),
  );

  test('a payload given as several parts arrives as one payload', LIMIT, () =>
    withPair(async (client, server) => {
      const received = server.next(10_000);
      const parts = [Buffer.from('page '), new Uint8Array(0), new Uint8Array(new ArrayBuffer(4096), 0, 4096).fill(9), Buffer.from('!')];
      client.send(PAGE, 5, ...parts);
      const f = await received;
      assert.equal(f.flags, 5);
      assert.ok(f.payload.equals(Buffer.concat(parts)));
    }),
  );

  test('64 MiB of 4 KiB pages with backpressure: send() says when to await drain(), nothing is lost', LIMIT, () =>
    withPair(async (client, server) => {
      const PAGES = 16384;
      let sum = 0;
      let count = 0;
      const done = new Promise<void>((resolve) =>
        server.onFrame((f) => {
          sum += f.payload.readUInt32LE(0);
          if (++count === PAGES) resolve();
        }),
      );
      const page = Buffer.alloc(4096);
      let waited = 0;
      for (let i = 0; i < PAGES; i++) {
        const copy = Buffer.from(page);
        copy.writeUInt32LE(i, 0);
        if (!client.send(PAGE, 0, copy)) {
          waited++;
          await client.drain();
        }
      }
      await done;
      assert.equal(sum, (PAGES * (PAGES - 1)) / 2);
      assert.ok(waited > 0, 'the socket pushed back at least once');
      await client.drain();
    }),
  );

  test('next() for a handshake, then onFrame for the stream; frames in between are not lost', LIMIT, () =>
    withPair(async (client, server) => {
      client.send(HELLO, 0, Buffer.from('v1'));
      for (let i = 0; i < 5; i++) client.send(PAGE, i, Buffer.alloc(16, i));
      const hello = await server.next(10_000);
      assert.equal(hello.payload.toString(), 'v1');
      await delay(50); // the pages arrive while nobody reads: they wait
      const pages = await collect(server, 5);
      assert.deepEqual(
        pages.map((f) => f.flags),
        [0, 1, 2, 3, 4],
      );
      await assert.rejects(server.next(), { code: 'ERR_INVALID_ARG' }, 'next() while onFrame is set');
    }),
  );

  test('next(timeout) with a silent peer fails the channel with ERR_PEER_SILENT', LIMIT, () =>
    withPair(async (_client, server) => {
      await assert.rejects(server.next(200), { code: 'ERR_PEER_SILENT', message: /server with 127\.0\.0\.1:\d+: no frame from the peer within 200 ms/ });
      assert.equal(codeOfError(await server.closed), 'ERR_PEER_SILENT');
    }),
  );

  test('next() rejects with ERR_PEER_CLOSED when the peer closes instead of answering', LIMIT, () =>
    withPair(async (client, server) => {
      const answer = assert.rejects(server.next(), { code: 'ERR_PEER_CLOSED' });
      await client.close();
      await answer;
    }),
  );

  test('a silent peer is ERR_PEER_SILENT, named with the timeout (idleTimeoutMs 200)', LIMIT, () =>
    withRawPeer(
      async (channel) => {
        const error = await channel.closed;
        assert.equal(codeOfError(error), 'ERR_PEER_SILENT');
        assert.match(error!.message, /no data from the peer for 200 ms/);
      },
      { idleTimeoutMs: 200 },
    ),
  );

  test('idle means nothing received: a channel that only sends, with the timeout off, stays open', LIMIT, () =>
    withPair(
      async (client, server) => {
        let received = 0;
        server.onFrame(() => received++);
        for (let i = 0; i < 8; i++) {
          client.send(PAGE, 0, Buffer.alloc(64));
          await delay(50);
        }
        assert.equal(await settlesWithin(client.closed, 100), false, 'the sender is still open');
        assert.ok(received > 0);
        client.setIdleTimeout(200); // armed again: now its silence from the server counts
        assert.equal(codeOfError(await client.closed), 'ERR_PEER_SILENT');
      },
      { idleTimeoutMs: 0 },
    ),
  );

  test('a truncated frame followed by the peer closing is ERR_TRUNCATED on the receiver', LIMIT, () =>
    withRawPeer(async (channel, raw) => {
      raw.end(encode(PAGE, 0, Buffer.alloc(4096)).subarray(0, FRAME_HEADER_SIZE + 100));
      const error = await channel.closed;
      assert.equal(codeOfError(error), 'ERR_TRUNCATED');
      assert.match(error!.message, /3996 of its 4096 payload bytes missing/);
    }),
  );

  test('the peer closing after its final frame is clean with expectClose(), ERR_PEER_CLOSED without', LIMIT, async () => {
    for (const expected of [true, false]) {
      await withPair(async (client, server) => {
        server.onFrame((f) => {
          if (f.type === DONE && expected) server.expectClose();
        });
        client.send(DONE, 0);
        await client.close();
        const error = await server.closed;
        if (expected) assert.equal(error, undefined);
        else assert.equal(codeOfError(error), 'ERR_PEER_CLOSED');
        assert.equal(await client.closed, undefined, 'the side that closed first closed cleanly');
      });
    }
  });

  test('a connection reset by the peer is ERR_PEER_CLOSED', LIMIT, () =>
    withRawPeer(async (channel, raw) => {
      raw.resetAndDestroy();
      const error = await channel.closed;
      assert.equal(codeOfError(error), 'ERR_PEER_CLOSED');
      assert.match(error!.message, /peer closed the connection/);
    }),
  );

  test('garbage from the peer fails the channel once: the error in closed, onError, next() and send()', LIMIT, () =>
    withRawPeer(async (channel, raw) => {
      const reported: Error[] = [];
      channel.onError((e) => reported.push(e));
      let waitingError: unknown;
      const waiting = channel.next().catch((e: unknown) => (waitingError = e));
      raw.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
      const error = await channel.closed;
      assert.equal(codeOfError(error), 'ERR_UNKNOWN_FRAME');
      assert.match(error!.message, /receiver with 127\.0\.0\.1:\d+: unknown frame type 0x202f/);
      assert.deepEqual(reported, [error]);
      await waiting;
      assert.equal(waitingError, error, 'the pending next() rejects with it');
      assert.throws(() => channel.send(HELLO, 0), (e) => e === error);
    }),
  );

  test('an absurd length fails the receiver at the header, without waiting for 4 GiB', LIMIT, () =>
    withRawPeer(async (channel, raw) => {
      raw.write(encodeHeader(PAGE, 0, 0xffffffff));
      assert.equal(codeOfError(await channel.closed), 'ERR_FRAME_TOO_LARGE');
    }),
  );

  test('a handler that throws fails the channel with that very error instead of crashing', LIMIT, () =>
    withPair(async (client, server) => {
      const boom = new Error('handler bug');
      let calls = 0;
      server.onFrame(() => {
        calls++;
        throw boom;
      });
      client.send(PAGE, 0, Buffer.alloc(8));
      client.send(PAGE, 0, Buffer.alloc(8));
      assert.equal(await server.closed, boom);
      assert.equal(calls, 1, 'no frame is delivered after the failure');
      assert.equal(codeOfError(await client.closed), 'ERR_PEER_CLOSED', 'the peer sees the channel go');
    }),
  );

  test('close() twice is fine; send() after close throws ClosedError; close() flushes what was sent', LIMIT, () =>
    withPair(async (client, server) => {
      server.expectClose();
      const received = collect(server, 3);
      for (let i = 0; i < 3; i++) client.send(PAGE, i, Buffer.alloc(2 ** 20, i));
      const first = client.close();
      const second = client.close();
      await Promise.all([first, second]);
      await client.close();
      assert.equal((await received).length, 3);
      assert.equal(await client.closed, undefined);
      assert.throws(() => client.send(HELLO, 0), { name: 'ClosedError', code: 'ERR_CLOSED', message: /send: client with 127\.0\.0\.1:\d+ is closed/ });
      await assert.rejects(client.next(), { code: 'ERR_PEER_CLOSED' });
    }),
  );

  test('close() does not wait forever for a peer that never closes its side', LIMIT, async () => {
    const listener = await Listener.listen('127.0.0.1', 0);
    const raw = net.connect({ port: listener.address.port, host: '127.0.0.1', allowHalfOpen: true });
    try {
      const channel = Channel.fromSocket(await listener.accept(), { ...OPTIONS, idleTimeoutMs: 200 });
      await channel.close();
      assert.equal(codeOfError(await channel.closed), 'ERR_PEER_SILENT');
    } finally {
      raw.destroy();
      await listener.close();
    }
  });

  test('send() over maxPayload throws ERR_FRAME_TOO_LARGE and the channel goes on', LIMIT, () =>
    withPair(
      async (client, server) => {
        assert.throws(() => client.send(PAGE, 0, Buffer.alloc(600), Buffer.alloc(600)), { code: 'ERR_FRAME_TOO_LARGE', message: /1200 payload bytes/ });
        const next = server.next(10_000);
        client.send(PAGE, 0, Buffer.alloc(1024));
        assert.equal((await next).payload.length, 1024);
      },
      { maxPayload: 1024 },
      { maxPayload: 1024 },
    ),
  );

  test('destroy(error) fails with that error; destroy() is a clean close', LIMIT, () =>
    withPair(async (client, server) => {
      const why = new Error('migration aborted');
      client.destroy(why);
      client.destroy();
      assert.equal(await client.closed, why);
      server.destroy();
      assert.equal(await server.closed, undefined);
    }),
  );

  test('connecting to a closed port names host:port and the remedy', LIMIT, async () => {
    const listener = await Listener.listen('127.0.0.1', 0);
    const port = listener.address.port;
    await listener.close();
    const remedy = `is \`postcopy migrate receive --listen 127.0.0.1:${port}\` running?`;
    await assert.rejects(Channel.connect('127.0.0.1', port, { ...OPTIONS, name: 'source', connectRemedy: remedy }), (e: Error & { code?: string; errno?: string }) => {
      assert.equal(e.code, 'ERR_CONNECT');
      assert.equal(e.errno, 'ECONNREFUSED');
      assert.ok(e.message.includes(`source: cannot connect to 127.0.0.1:${port}: connection refused (ECONNREFUSED)`), e.message);
      assert.ok(e.message.endsWith(remedy), e.message);
      return true;
    });
  });
});

describe('Listener', () => {
  test('keeps accepting after a connection that sent garbage', LIMIT, async () => {
    const listener = await Listener.listen('127.0.0.1', 0);
    try {
      const bad = net.connect(listener.address.port, '127.0.0.1');
      bad.on('error', () => {});
      bad.write(random(3)(1000));
      const victim = Channel.fromSocket(await listener.accept(), OPTIONS);
      assert.equal(codeOfError(await victim.closed), 'ERR_UNKNOWN_FRAME');
      bad.destroy();

      const accepted = listener.accept();
      const good = await Channel.connect('127.0.0.1', listener.address.port, OPTIONS);
      const server = Channel.fromSocket(await accepted, OPTIONS);
      const hello = server.next(10_000);
      good.send(HELLO, 0, Buffer.from('still here'));
      assert.equal((await hello).payload.toString(), 'still here');
      good.destroy();
      server.destroy();
    } finally {
      await listener.close();
    }
  });

  test('connections that arrive before accept() wait in order; one reset while waiting crashes nothing', LIMIT, async () => {
    const listener = await Listener.listen('127.0.0.1', 0);
    try {
      const peers = [] as net.Socket[];
      for (let i = 0; i < 3; i++) {
        const s = net.connect(listener.address.port, '127.0.0.1');
        s.on('error', () => {});
        await new Promise((resolve) => s.once('connect', resolve));
        s.write(encode(HELLO, i, Buffer.alloc(0)));
        peers.push(s);
        while (listener.pending < i + 1) await delay(5);
      }
      peers[0]!.resetAndDestroy();
      await delay(50);
      const flags: number[] = [];
      for (let i = 0; i < 2; i++) {
        const channel = Channel.fromSocket(await listener.accept(), OPTIONS);
        flags.push((await channel.next(10_000)).flags);
        channel.destroy();
      }
      assert.deepEqual(flags, [1, 2], 'the reset connection is skipped, the others keep their order');
      for (const s of peers) s.destroy();
    } finally {
      await listener.close();
    }
  });

  test('close() twice is fine, accept() after it is ClosedError, and the port is free again', LIMIT, async () => {
    const listener = await Listener.listen('127.0.0.1', 0);
    const waiting = assert.rejects(listener.accept(), { code: 'ERR_CLOSED' });
    await Promise.all([listener.close(), listener.close()]);
    await waiting;
    await assert.rejects(listener.accept(), { code: 'ERR_CLOSED' });
    const again = await Listener.listen('127.0.0.1', listener.address.port);
    await again.close();
  });

  test('a port in use is ERR_LISTEN naming EADDRINUSE and what to do', LIMIT, async () => {
    const listener = await Listener.listen('127.0.0.1', 0);
    try {
      await assert.rejects(Listener.listen('127.0.0.1', listener.address.port), (e: Error & { code?: string; errno?: string; remedy?: string }) => {
        assert.equal(e.code, 'ERR_LISTEN');
        assert.equal(e.errno, 'EADDRINUSE');
        assert.match(e.message, new RegExp(`127\\.0\\.0\\.1:${listener.address.port}`));
        assert.match(e.remedy ?? '', /choose another port/);
        return true;
      });
    } finally {
      await listener.close();
    }
  });
});
