/**
 * A TCP relay with a delay line: what netem would do, for a kernel without it. Every chunk
 * read from one side is written to the other `delayMs / 2` after it arrived (so a round
 * trip through the relay gains `delayMs`), in order. Bounded: past `maxQueuedBytes` queued
 * one way, the relay stops reading that side until the line drains, so TCP's flow control
 * reaches back to the sender and memory cannot grow. Run inside a namespace:
 *
 *   node dist/bench/lib/delay-relay.js LISTEN_HOST LISTEN_PORT TARGET_HOST TARGET_PORT DELAY_MS
 *
 * prints `relay listening on HOST:PORT` once it accepts.
 */
import net from 'node:net';

const MAX_QUEUED_BYTES = 16 * 2 ** 20;

/** One direction's delay line. `null` marks the end of the stream, delayed like the bytes before it. */
class DelayLine {
  readonly #queue: { due: number; data: Buffer | null }[] = [];
  #queued = 0;
  #timer: NodeJS.Timeout | undefined;
  #immediate: NodeJS.Immediate | undefined;

  constructor(
    private readonly from: net.Socket,
    private readonly to: net.Socket,
    private readonly oneWayMs: number,
  ) {
    from.on('data', (d: Buffer) => this.#push(d));
    from.on('end', () => this.#push(null));
    to.on('drain', () => this.#arm());
  }

  #push(data: Buffer | null): void {
    this.#queue.push({ due: performance.now() + this.oneWayMs, data });
    this.#queued += data?.length ?? 0;
    if (this.#queued > MAX_QUEUED_BYTES) this.from.pause();
    this.#arm();
  }

  #arm(): void {
    if (this.#timer || this.#immediate || this.#queue.length === 0) return;
    const wait = this.#queue[0]!.due - performance.now();
    // Timers have a 1 ms granularity (and fire late on a busy machine): sleep to within
    // 1.5 ms of the due time, then poll between I/O callbacks. Costs CPU, buys ~0.1 ms accuracy.
    if (wait > 1.5) this.#timer = setTimeout(this.#flush, wait - 1.5);
    else this.#immediate = setImmediate(this.#flush);
  }

  #flush = (): void => {
    this.#timer = undefined;
    this.#immediate = undefined;
    const now = performance.now();
    // The far side's socket full: wait for its drain (which re-arms) rather than buffer without bound.
    while (this.#queue.length > 0 && this.#queue[0]!.due <= now && this.to.writableLength < MAX_QUEUED_BYTES) {
      const { data } = this.#queue.shift()!;
      if (data === null) {
        this.to.end();
        continue;
      }
      this.#queued -= data.length;
      this.to.write(data);
    }
    if (this.#queued <= MAX_QUEUED_BYTES / 2 && this.from.isPaused()) this.from.resume();
    if (this.to.writableLength < MAX_QUEUED_BYTES) this.#arm();
  };
}

export function startRelay(listenHost: string, listenPort: number, targetHost: string, targetPort: number, delayMs: number): Promise<net.Server> {
  const server = net.createServer((a) => {
    a.setNoDelay(true);
    const b = net.connect(targetPort, targetHost);
    b.setNoDelay(true);
    const close = () => (a.destroy(), b.destroy());
    a.on('error', close).on('close', close);
    b.on('error', close).on('close', close);
    new DelayLine(a, b, delayMs / 2);
    new DelayLine(b, a, delayMs / 2);
  });
  return new Promise((resolve) => server.listen(listenPort, listenHost, () => resolve(server)));
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const [lh, lp, th, tp, d] = process.argv.slice(2);
  const server = await startRelay(lh!, Number(lp), th!, Number(tp), Number(d));
  const a = server.address() as net.AddressInfo;
  process.stderr.write(`relay listening on ${a.address}:${a.port}\n`);
}
