/**
 * The header of every run's JSON: what ran, where and when. It is also how `postcopy
 * report` knows a file is a postcopy run (`tool: 'postcopy'`) and which kind.
 */
import { existsSync, readFileSync } from 'node:fs';
import { cpus, hostname, loadavg, release, totalmem } from 'node:os';

export const RUN_KINDS = ['bench', 'migrate-send', 'migrate-receive', 'migrate-demo'] as const;
export type RunKind = (typeof RUN_KINDS)[number];

export interface RunInfo {
  readonly tool: 'postcopy';
  readonly kind: RunKind;
  /** The command line as typed (`postcopy bench -u MINOR …`). */
  readonly command: string;
  readonly version: string;
  /** ISO time the run ended. */
  readonly at: string;
  readonly machine: {
    readonly hostname: string;
    readonly cpuModel: string;
    readonly cpus: number;
    readonly memoryBytes: number;
    readonly kernel: string;
    readonly node: string;
    readonly kvm: boolean;
    readonly loadavg: readonly number[];
  };
}

function cpuModel(): string {
  try {
    const m = /^model name\s*:\s*(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'));
    if (m?.[1]) return m[1];
  } catch {
    // below
  }
  return cpus()[0]?.model ?? 'unknown';
}

function version(): string {
  try {
    return (JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

/** Quotes an argument for a shell only where it needs it. */
const shellWord = (a: string) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`);

export function runInfo(kind: RunKind, argv: readonly string[]): RunInfo {
  return {
    tool: 'postcopy',
    kind,
    command: ['postcopy', ...argv].map(shellWord).join(' '),
    version: version(),
    at: new Date().toISOString(),
    machine: {
      hostname: hostname(),
      cpuModel: cpuModel(),
      cpus: cpus().length,
      memoryBytes: totalmem(),
      kernel: release(),
      node: process.version,
      kvm: process.env.POSTCOPY_NO_KVM !== '1' && existsSync('/dev/kvm'),
      loadavg: loadavg().map((x) => Math.round(x * 100) / 100),
    },
  };
}

