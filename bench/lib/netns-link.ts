/**
 * Two hosts on one machine: network namespaces joined by a veth pair, the link's rate
 * limited with tc's token bucket (tbf; this kernel has no netem, so delay is a relay's
 * job: delay-relay.ts). Only addresses inside these namespaces are used. What is made is
 * removed by close(), by the process's exit, and — for a run that was killed — by the next
 * create(), which sweeps namespaces of ours whose process is gone.
 *
 *   const link = NetnsLink.create({ rateBitsPerSecond: 1e9 });
 *   link.spawn('dst', [node, main, 'migrate', 'receive', '--listen', `${link.address('dst')}:0`, ...]);
 *   link.down(); link.up();   // lose the link (packets dropped, nothing reset), get it back
 *   link.close();
 */
import { execFileSync, spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';

export type Side = 'src' | 'dst';
const PREFIX = 'pcl';
let counter = 0;
const open = new Set<NetnsLink>();
process.on('exit', () => {
  for (const l of open) l.close();
});

function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 10_000 });
}

/** Why namespaces cannot be made here, or undefined. */
export function netnsUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return 'network namespaces need root';
  const probe = `${PREFIX}-probe-${process.pid}`;
  try {
    ip('netns', 'add', probe);
    ip('netns', 'del', probe);
    execFileSync('tc', ['-V'], { stdio: 'ignore' });
    return undefined;
  } catch (e) {
    return `cannot make a network namespace or run tc here (${(e as Error).message.split('\n')[0]}): install iproute2, run as root`;
  }
}

/** Removes namespaces of ours left by processes that no longer run (a run killed before its cleanup). */
function sweep(): void {
  for (const line of ip('netns', 'list').split('\n')) {
    const m = new RegExp(`^(${PREFIX}-(\\d+)-\\d+-(src|dst))\\b`).exec(line);
    if (!m) continue;
    let alive = true;
    try {
      process.kill(Number(m[2]), 0);
    } catch {
      alive = false;
    }
    if (!alive) execFileSync('ip', ['netns', 'del', m[1]!], { stdio: 'ignore' });
  }
}

export interface NetnsLinkOptions {
  /** The link's rate each way, bits/s (tbf); undefined: veth's own (no limit). */
  readonly rateBitsPerSecond?: number;
}

export class NetnsLink {
  static create(o: NetnsLinkOptions = {}): NetnsLink {
    sweep();
    const link = new NetnsLink(counter++);
    open.add(link);
    try {
      link.#build(o);
    } catch (e) {
      link.close();
      throw e;
    }
    return link;
  }

  readonly name: string;
  readonly #index: number;
  readonly #subnet: number;
  #closed = false;

  private constructor(index: number) {
    this.#index = index;
    this.name = `${PREFIX}-${process.pid}-${index}`;
    // A /30 of 10.231.0.0/16 per link: its own, never a real network's.
    this.#subnet = ((process.pid * 64 + index) * 4) % 65536;
  }

  ns(side: Side): string {
    return `${this.name}-${side}`;
  }

  /** The side's address on the link. */
  address(side: Side): string {
    const n = this.#subnet + (side === 'src' ? 1 : 2);
    return `10.231.${n >> 8}.${n & 255}`;
  }

  #dev(side: Side): string {
    // Interface names are at most 15 bytes.
    return `pcv${process.pid % 100000}${side === 'src' ? 'a' : 'b'}${this.#index % 100}`;
  }

  #build(o: NetnsLinkOptions): void {
    for (const side of ['src', 'dst'] as const) ip('netns', 'add', this.ns(side));
    const a = this.#dev('src');
    const b = this.#dev('dst');
    ip('link', 'add', a, 'netns', this.ns('src'), 'type', 'veth', 'peer', 'name', b, 'netns', this.ns('dst'));
    for (const [side, dev] of [['src', a], ['dst', b]] as const) {
      const ns = this.ns(side);
      ip('-n', ns, 'addr', 'add', `${this.address(side)}/30`, 'dev', dev);
      ip('-n', ns, 'link', 'set', dev, 'up');
      ip('-n', ns, 'link', 'set', 'lo', 'up');
      if (o.rateBitsPerSecond) {
        // burst: at least one rate-millisecond and a few jumbo frames, as tbf needs; latency bounds the queue.
        const burst = Math.max(64 * 1024, Math.ceil(o.rateBitsPerSecond / 8 / 1000));
        execFileSync('ip', ['netns', 'exec', ns, 'tc', 'qdisc', 'add', 'dev', dev, 'root', 'tbf', 'rate', `${o.rateBitsPerSecond}bit`, 'burst', `${burst}`, 'latency', '50ms'], { stdio: 'ignore', timeout: 10_000 });
      }
    }
  }

  /** Starts `argv` inside the side's namespace. */
  spawn(side: Side, argv: string[], env: NodeJS.ProcessEnv = process.env): ChildProcessWithoutNullStreams {
    return spawn('ip', ['netns', 'exec', this.ns(side), ...argv], { env, stdio: 'pipe' });
  }

  /** Loses the link: both ends' interfaces down; packets are dropped, nothing is reset. */
  down(): void {
    ip('-n', this.ns('src'), 'link', 'set', this.#dev('src'), 'down');
  }

  /** The link back: TCP's retransmissions find it (a connection within its timeouts lives on). */
  up(): void {
    ip('-n', this.ns('src'), 'link', 'set', this.#dev('src'), 'up');
  }

  /** Removes both namespaces (the veth pair goes with them). Safe twice. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    open.delete(this);
    for (const side of ['src', 'dst'] as const) {
      try {
        execFileSync('ip', ['netns', 'del', this.ns(side)], { stdio: 'ignore', timeout: 10_000 });
      } catch {
        // already gone
      }
    }
  }
}
