/**
 * A TCP relay on loopback between a source and a destination, whose link a test can lose:
 * cut() resets every relayed connection and refuses new ones (the peer's host went away);
 * stall() stops forwarding without a word (a dead link: only timeouts notice); restore()
 * lets connections through again. Real sockets: nothing of the migration is mocked.
 */
import net from 'node:net';

export class CutRelay {
  static async start(targetPort: number): Promise<CutRelay> {
    const relay = new CutRelay(targetPort);
    await new Promise<void>((resolve) => relay.#server.listen(0, '127.0.0.1', resolve));
    return relay;
  }

  readonly #server: net.Server;
  readonly #pairs = new Set<[net.Socket, net.Socket]>();
  #state: 'up' | 'cut' | 'stalled' = 'up';
  /** Connections relayed so far. */
  connections = 0;

  private constructor(targetPort: number) {
    this.#server = net.createServer((a) => {
      a.on('error', () => undefined);
      if (this.#state !== 'up') return void a.resetAndDestroy();
      const b = net.connect(targetPort, '127.0.0.1');
      b.on('error', () => undefined);
      const pair: [net.Socket, net.Socket] = [a, b];
      this.#pairs.add(pair);
      this.connections++;
      const forward = (from: net.Socket, to: net.Socket) =>
        from.on('data', (d: Buffer) => {
          // A stalled link swallows what it is given, as a dead cable does.
          if (this.#state === 'up' && !to.write(d)) from.pause(), to.once('drain', () => from.resume());
        });
      forward(a, b);
      forward(b, a);
      const end = () => {
        this.#pairs.delete(pair);
        a.destroy();
        b.destroy();
      };
      a.on('close', end);
      b.on('close', end);
    });
  }

  get port(): number {
    return (this.#server.address() as net.AddressInfo).port;
  }

  /** Resets every relayed connection (RST both ways) and refuses new ones until restore(). */
  cut(): void {
    this.#state = 'cut';
    for (const [a, b] of this.#pairs) {
      a.resetAndDestroy();
      b.resetAndDestroy();
    }
    this.#pairs.clear();
  }

  /** Drops everything from now on, silently; connections stay open. New ones are refused. */
  stall(): void {
    this.#state = 'stalled';
  }

  /** New connections go through again. A stalled connection stays dead (its bytes were lost): cut it. */
  restore(): void {
    if (this.#state === 'stalled') this.cut();
    this.#state = 'up';
  }

  close(): void {
    this.cut();
    this.#server.close();
  }
}
