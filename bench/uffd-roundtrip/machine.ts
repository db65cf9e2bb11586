/**
 * The facts of this machine that decide fault round-trip costs, recorded beside the
 * figures: above all whether idle CPUs poll before halting (a cross-CPU wake-up is cheap
 * when the other CPU is still polling, and costly when it must be woken from halt).
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { cpus, release } from 'node:os';

export interface MachineFacts {
  cpuModel: string;
  cpus: number;
  kernel: string;
  node: string;
  gcc: string;
  /** Host-side KVM halt polling (present when this machine is itself a KVM host). */
  kvmHaltPollNs: number | null;
  /** Guest-side halt polling of the cpuidle-haltpoll driver (present in a KVM guest). */
  guestHaltPollNs: number | null;
  /** The cpuidle driver in use ('none' means the default idle routine, no haltpoll). */
  cpuidleDriver: string | null;
  cpuidleGovernor: string | null;
  /** /proc/loadavg when the benchmark started. */
  loadavg: string | null;
}

interface Ticks {
  /** Busy time of all CPUs (USER_HZ ticks, like everything below). */
  busy: number;
  total: number;
  /** This process's CPU time, with that of the children it has waited for (the C runs). */
  own: number;
}

function ticks(): Ticks {
  const cpu = (read('/proc/stat') ?? '').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const total = cpu.reduce((a, b) => a + b, 0);
  const idle = (cpu[3] ?? 0) + (cpu[4] ?? 0); // idle + iowait
  // /proc/self/stat after "(comm) ": state is [0], utime [11], stime [12], cutime [13], cstime [14]
  const self = (read('/proc/self/stat') ?? '').split(') ')[1]?.split(' ').map(Number) ?? [];
  const own = (self[11] ?? 0) + (self[12] ?? 0) + (self[13] ?? 0) + (self[14] ?? 0);
  return { busy: total - idle, total, own };
}

/**
 * How much of the machine other processes used, as a share of all CPUs' time. Round
 * trips are a few microseconds on one or two CPUs: anything else running skews both
 * sides, so the figures are reported with this.
 */
export class OtherLoad {
  #start = ticks();

  /** Other processes' share since construction (0..1). */
  share(): number {
    const now = ticks();
    const total = now.total - this.#start.total;
    const others = now.busy - this.#start.busy - (now.own - this.#start.own);
    return total > 0 ? Math.max(0, others / total) : 0;
  }
}

/** Other processes' share of the machine over the next `ms` milliseconds. */
export async function otherLoadOver(ms: number): Promise<number> {
  const meter = new OtherLoad();
  await new Promise((resolve) => setTimeout(resolve, ms));
  return meter.share();
}

function read(path: string): string | null {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch {
    return null;
  }
}

function readNumber(path: string): number | null {
  const text = read(path);
  return text === null ? null : Number(text);
}

export function machineFacts(): MachineFacts {
  const model = /^model name\s*:\s*(.*)$/m.exec(read('/proc/cpuinfo') ?? '');
  let gcc = 'unknown';
  try {
    gcc = execFileSync('gcc', ['--version'], { encoding: 'utf8' }).split('\n')[0]!;
  } catch {
    // reported as unknown; building the C side will say what is wrong
  }
  return {
    cpuModel: model?.[1] ?? 'unknown',
    cpus: cpus().length,
    kernel: release(),
    node: process.version,
    gcc,
    kvmHaltPollNs: readNumber('/sys/module/kvm/parameters/halt_poll_ns'),
    guestHaltPollNs: readNumber('/sys/module/haltpoll/parameters/guest_halt_poll_ns'),
    cpuidleDriver: read('/sys/devices/system/cpu/cpuidle/current_driver'),
    cpuidleGovernor: read('/sys/devices/system/cpu/cpuidle/current_governor'),
    loadavg: read('/proc/loadavg'),
  };
}
