/**
 * The loopback link a migration runs on, measured the way a migration uses it: a stream of
 * 256 KiB page frames from one process to another, each copied into memory on arrival
 * (throughput), and a 16-byte request answered by one 4 KiB page on an idle connection
 * (round trip). Both use src/transport's Channel, so the figures are what the protocol can
 * do before any guest is involved.
 *
 *   node dist/bench/migrate/link.js [--bytes 1G] [--pings 2000]     (prints JSON)
 */
import { fork } from 'node:child_process';
import { parseArgs } from 'node:util';
import { Channel } from '../../src/transport/channel.js';
import { Listener } from '../../src/transport/listener.js';
import { parseSize } from '../../src/util/format.js';
import { PLAIN, PSK_IDENTITY, type Security } from '../../src/transport/security.js';

/** The key both ends of a TLS measurement use (a benchmark's, not a secret). */
const BENCH_PSK: Security = { kind: 'psk', key: Buffer.alloc(32, 0x5a), identity: PSK_IDENTITY };
const securityOf = (tls: boolean) => (tls ? BENCH_PSK : PLAIN);

const DATA = 1;
const DONE = 2;
const PING = 3;
const PONG = 4;
const known = (t: number) => t >= DATA && t <= PONG;

export interface LinkFigures {
  /** MB/s (1e6 bytes). */
  readonly streamMBps: number;
  /** Median and p99 request → page round trip, ms. */
  readonly rttMs: { p50: number; p99: number };
}

async function sink(tls: boolean): Promise<void> {
  const listener = await Listener.listen('127.0.0.1', 0, { security: securityOf(tls) });
  process.send!({ port: listener.address.port });
  const memory = new Uint8Array(64 * 2 ** 20);
  let at = 0;
  const page = new Uint8Array(4096);
  const ch = Channel.fromSocket(await listener.accept(), { isKnownType: known, maxPayload: 2 ** 24, idleTimeoutMs: 0 });
  ch.onFrame((f) => {
    if (f.type === DATA) {
      if (at + f.payload.length > memory.length) at = 0;
      memory.set(f.payload, at);
      at += f.payload.length;
    } else if (f.type === DONE) ch.send(DONE, 0);
    else if (f.type === PING) ch.send(PONG, 0, page);
  });
  await ch.closed;
  await listener.close();
}

/** `tls`: both connections' way, TLS 1.3 with a pre-shared key (what `--psk-file` does). */
export async function measureLink(bytes = 2 ** 30, pings = 2000, tls = false): Promise<LinkFigures> {
  const child = fork(new URL(import.meta.url).pathname, ['sink', tls ? 'tls' : 'plain'], { stdio: 'inherit' });
  try {
    const port = await new Promise<number>((resolve) => child.once('message', (m: { port: number }) => resolve(m.port)));
    const ch = await Channel.connect('127.0.0.1', port, { isKnownType: known, maxPayload: 2 ** 24, idleTimeoutMs: 0, security: securityOf(tls) });
    const source = new Uint8Array(64 * 2 ** 20).fill(7);
    const frame = 256 * 1024;
    const t0 = process.hrtime.bigint();
    for (let sent = 0; sent < bytes; sent += frame) {
      const off = sent % source.length;
      ch.send(DATA, 0, source.subarray(off, off + frame));
      if (ch.writableLength > 2 ** 20) await ch.drain();
    }
    ch.send(DONE, 0);
    await ch.next();
    const streamMBps = bytes / (Number(process.hrtime.bigint() - t0) / 1e9) / 1e6;
    const rtts: number[] = [];
    const ping = new Uint8Array(8);
    for (let i = 0; i < pings; i++) {
      const s = process.hrtime.bigint();
      ch.send(PING, 0, ping);
      await ch.next();
      rtts.push(Number(process.hrtime.bigint() - s) / 1e6);
    }
    rtts.sort((a, b) => a - b);
    await ch.close();
    return { streamMBps, rttMs: { p50: rtts[Math.floor(rtts.length / 2)]!, p99: rtts[Math.floor(rtts.length * 0.99)]! } };
  } finally {
    child.kill();
  }
}

if (process.argv[2] === 'sink') await sink(process.argv[3] === 'tls');
else if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({ options: { bytes: { type: 'string' }, pings: { type: 'string' } } });
  console.log(JSON.stringify(await measureLink(parseSize(values.bytes ?? '1G'), Number(values.pings ?? 2000))));
}
