/**
 * The facts of this machine that decide fault round-trip costs, recorded beside every
 * benchmark's figures: above all whether an idle CPU polls before it halts (KVM's
 * halt_poll_ns on a host, the haltpoll cpuidle driver's guest_halt_poll_ns in a guest): a
 * cross-CPU wake-up is cheap when the other CPU still polls, costly when it must be woken
 * from halt. And how much of the machine others used while the figures were taken.
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
  /** /sys/module/kvm/parameters/halt_poll_ns: how long KVM polls before a halted vCPU of a guest of this machine sleeps. */
  kvmHaltPollNs: number | null;
  /** /sys/module/haltpoll/parameters/guest_halt_poll_ns (this machine as a KVM guest), if present. */
  guestHaltPollNs: number | null;
  /** /sys/devices/system/cpu/cpuidle/current_driver ('none': the default idle routine, guest_halt_poll_ns unused). */
  cpuidleDriver: string | null;
  cpuidleGovernor: string | null;
  /** /proc/loadavg when the benchmark started. */
  loadavg: string | null;
}

function read(path: string): string | null {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch {
    return null;
  }
}

function readNumber(path: string): number | null {
  const t = read(path);
  return t === null || t === '' || Number.isNaN(Number(t)) ? null : Number(t);
}

export function machineFacts(): MachineFacts {
  const model = /^model name\s*:\s*(.*)$/m.exec(read('/proc/cpuinfo') ?? '');
  let gcc = 'unknown';
  try {
    gcc = execFileSync('gcc', ['--version'], { encoding: 'utf8' }).split('\n')[0]!;
  } catch {
    // reported as unknown; building a C side says what is wrong
  }
  return {
    cpuModel: model?.[1] ?? cpus()[0]?.model ?? 'unknown',
    cpus: cpus().length,
    kernel: release(),
    node: process.version,
    gcc,
    kvmHaltPollNs: readNumber('/sys/module/kvm/parameters/halt_poll_ns'),
    guestHaltPollNs: readNumber('/sys/module/haltpoll/parameters/guest_halt_poll_ns'),
    cpuidleDriver: read('/sys/devices/system/cpu/cpuidle/current_driver'),
    cpuidleGovernor: read('/sys/devices/system/cpu/cpuidle/current_governor') ?? read('/sys/devices/system/cpu/cpuidle/current_governor_ro'),
    loadavg: read('/proc/loadavg'),
  };
}

/** Two lines for a report's header. */
export function describeMachine(m: MachineFacts): string[] {
  const ns = (v: number | null) => (v === null ? 'absent' : `${v} ns`);
  const lines = [
    `kernel ${m.kernel}, ${m.cpus} CPUs (${m.cpuModel}), load ${m.loadavg ?? '?'}`,
    `halt polling: kvm halt_poll_ns ${ns(m.kvmHaltPollNs)}; haltpoll guest_halt_poll_ns ${ns(m.guestHaltPollNs)}; ` +
      `cpuidle driver ${m.cpuidleDriver ?? 'absent'}, governor ${m.cpuidleGovernor ?? 'absent'}`,
  ];
  if (m.guestHaltPollNs !== null && m.cpuidleDriver !== null && m.cpuidleDriver !== 'haltpoll') {
    lines.push(`  (guest_halt_poll_ns applies only under the haltpoll cpuidle driver; the driver here is '${m.cpuidleDriver}')`);
  }
  return lines;
}

interface Ticks {
  busy: number;
  steal: number;
  total: number;
  /** This process's CPU time with that of its waited-for children (the benchmark runs). */
  own: number;
}

function ticks(): Ticks {
  // cpu  user nice system idle iowait irq softirq steal guest guest_nice (guest time is already in user/nice)
  const [user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0] = (read('/proc/stat') ?? '')
    .split('\n')[0]!
    .trim()
    .split(/\s+/)
    .slice(1, 9)
    .map(Number);
  // /proc/self/stat after "(comm) ": utime [11], stime [12], cutime [13], cstime [14]
  const self = (read('/proc/self/stat') ?? '').split(') ')[1]?.split(' ').map(Number) ?? [];
  const own = (self[11] ?? 0) + (self[12] ?? 0) + (self[13] ?? 0) + (self[14] ?? 0);
  return { busy: user + nice + system + irq + softirq, steal, total: user + nice + system + idle + iowait + irq + softirq + steal, own };
}

/**
 * Other processes' share of all CPUs' time since construction, and the hypervisor's
 * (steal). A benchmark runs on the same CPUs as anything else on the machine, so figures
 * come with these.
 */
export class OtherLoad {
  #start = ticks();

  share(): { others: number; steal: number } {
    const now = ticks();
    const total = now.total - this.#start.total;
    if (total <= 0) return { others: 0, steal: 0 };
    const others = now.busy - this.#start.busy - (now.own - this.#start.own);
    return { others: Math.max(0, others / total), steal: (now.steal - this.#start.steal) / total };
  }
}

/** Other processes' share of the machine over the next `ms` milliseconds. */
export async function otherLoadOver(ms: number): Promise<number> {
  const meter = new OtherLoad();
  await new Promise((resolve) => setTimeout(resolve, ms));
  return meter.share().others;
}
