/**
 * Dirty tracking and guest backends, as a migration would use them here: uffd-wp tried by
 * behaviour (src/tracking/probe.ts), kvm-dirty-log where a VM can be made, and which guest
 * `postcopy migrate` runs by default.
 */
import { probeUffdWp } from '../tracking/probe.js';
import { type Finding, missing, ok, skipped } from './finding.js';

export interface TrackingReport {
  readonly uffdWp: Finding;
  readonly kvmDirtyLog: Finding;
  /** The guest `postcopy migrate` runs unless told: kvm where /dev/kvm is usable, threads otherwise. */
  readonly defaultGuest: 'kvm' | 'threads';
}

export function probeTracking(kvm: { vm: Finding }): TrackingReport {
  const wp = probeUffdWp();
  const uffdWp = wp.usable ? ok(`written pages reported exactly on anonymous and shmem memory (${wp.features.join(', ')})`) : missing(wp.reason, wp.remedy);
  const kvmDirtyLog =
    kvm.vm.status === 'ok'
      ? ok('KVM_GET_DIRTY_LOG with manual KVM_CLEAR_DIRTY_LOG on a VM memory slot')
      : skipped(`no KVM VM to log: ${kvm.vm.detail}`, 'Migrations here run the threads guest, tracked with uffd-wp');
  return { uffdWp, kvmDirtyLog, defaultGuest: kvm.vm.status === 'ok' ? 'kvm' : 'threads' };
}
