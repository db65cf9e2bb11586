/** What `postcopy migrate` is asked to do, once the command line is checked (cli/migrate.ts). */
import type { BackingSourceName } from '../../memory/backing.js';
import type { GuestBackendName } from '../../guest/guest.js';
import type { TrackerName } from '../../tracking/tracker.js';
import type { Security } from '../../transport/security.js';
import type { MigrationMode } from './protocol.js';
import type { SwitchoverPolicy } from './source/precopy.js';

export interface SendOptions {
  readonly host: string;
  readonly port: number;
  readonly source: BackingSourceName;
  readonly mode: MigrationMode;
  /** What runs the guest (undefined: kvm where /dev/kvm is usable, threads otherwise). */
  readonly guest: GuestBackendName | undefined;
  /** The dirty tracker (undefined: the backend's own). */
  readonly tracking: TrackerName | undefined;
  /** Guest memory per vCPU, as bench's -b. */
  readonly bytesPerVcpu: number;
  readonly vcpus: number;
  readonly policy: SwitchoverPolicy;
  readonly warmupMs: number;
  readonly bandwidth: number;
  readonly timeoutMs: number;
  /** Plain TCP or TLS 1.3 (certificates, or a pre-shared key) on both connections. */
  readonly security: Security;
  /** How long a paused post-copy tries to reconnect before giving up (ms). */
  readonly recoverTimeoutMs: number;
}

export interface ReceiveOptions {
  readonly host: string;
  readonly port: number;
  readonly source: BackingSourceName | undefined;
  readonly mode: MigrationMode | undefined;
  /** Refuse a source whose guest runs on another backend (undefined: take any this host can run). */
  readonly guest: GuestBackendName | undefined;
  readonly maxMemory: number;
  readonly mapClean: 'before' | 'after';
  readonly runAfterMs: number;
  readonly timeoutMs: number;
  readonly security: Security;
  /** How long a paused post-copy waits for the source to resume (ms). */
  readonly recoverTimeoutMs: number;
}

/** Guest memory starts at 4 GiB, above the system slot, as the bench's does. */
export const GUEST_ADDRESS = 4 * 2 ** 30;

export const DEFAULTS = {
  /** The demo: 1 GiB over 2 vCPUs, MINOR faults on shmem (seed 001's flow). */
  source: 'shmem' as BackingSourceName,
  bytesPerVcpu: 512 * 2 ** 20,
  vcpus: 2,
  maxRounds: 5,
  maxStalePages: 256,
  warmupMs: 500,
  timeoutMs: 10_000,
  recoverTimeoutMs: 60_000,
  runAfterMs: 1000,
  maxMemory: 64 * 2 ** 30,
  mapClean: 'after' as const,
};

/** The mode a backing source migrates with unless told: MINOR where memory is shared (the seed's flow), MISSING where it is private (QEMU's). */
export function defaultMode(shared: boolean): MigrationMode {
  return shared ? 'minor' : 'missing';
}
