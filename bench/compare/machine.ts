/**
 * What decides fault round-trip costs on this machine, printed with the figures: whether an
 * idle CPU polls before it halts (KVM's halt_poll_ns on a host, the haltpoll cpuidle driver's
 * guest_halt_poll_ns in a guest) and which cpuidle driver and governor are in charge.
 */
import { readFileSync } from 'node:fs';
import { cpus, release } from 'node:os';

export interface Machine {
  kernel: string;
  cpuModel: string;
  cpus: number;
  /** /sys/module/kvm/parameters/halt_poll_ns: how long KVM polls before a halted vCPU sleeps. */
  kvmHaltPollNs: number | null;
  /** /sys/module/haltpoll/parameters/guest_halt_poll_ns (this machine as a KVM guest), if present. */
  guestHaltPollNs: number | null;
  /** /sys/devices/system/cpu/cpuidle/current_driver ('none': the default idle routine, guest_halt_poll_ns unused). */
  cpuidleDriver: string | null;
  cpuidleGovernor: string | null;
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

export function machine(): Machine {
  return {
    kernel: release(),
    cpuModel: cpus()[0]?.model ?? 'unknown',
    cpus: cpus().length,
    kvmHaltPollNs: readNumber('/sys/module/kvm/parameters/halt_poll_ns'),
    guestHaltPollNs: readNumber('/sys/module/haltpoll/parameters/guest_halt_poll_ns'),
    cpuidleDriver: read('/sys/devices/system/cpu/cpuidle/current_driver'),
    cpuidleGovernor: read('/sys/devices/system/cpu/cpuidle/current_governor') ?? read('/sys/devices/system/cpu/cpuidle/current_governor_ro'),
    loadavg: read('/proc/loadavg'),
  };
}

export function describeMachine(m: Machine): string[] {
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
 * Other processes' share of all CPUs' time since construction, and the hypervisor's (steal).
 * Both programs run on the same CPUs as anything else on the machine, so figures come with these.
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
