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

/**
 * The share of all CPUs' time that was busy over the next `ms` milliseconds, from
 * /proc/stat. Round trips here are a few microseconds on one or two CPUs: anything else
 * running skews both sides, so a busy machine is reported with the figures.
 */
export async function busyShare(ms: number): Promise<number> {
  const sample = () => {
    const fields = (read('/proc/stat') ?? '').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
    const idle = (fields[3] ?? 0) + (fields[4] ?? 0); // idle + iowait
    return { idle, total: fields.reduce((a, b) => a + b, 0) };
  };
  const a = sample();
  await new Promise((resolve) => setTimeout(resolve, ms));
  const b = sample();
  const total = b.total - a.total;
  return total > 0 ? 1 - (b.idle - a.idle) / total : 0;
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
