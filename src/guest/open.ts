/**
 * Choosing and making a guest: `kvm` where /dev/kvm can be used, `threads` everywhere
 * userfaultfd works. The choice is made by trying (opening /dev/kvm), not by looking for
 * the device node: a node without a driver, a permission problem and POSTCOPY_NO_KVM all
 * mean the threads guest.
 */
import { InvalidArgumentError, PostcopyError } from '../errors.js';
import { MIGRATE_PROGRAM } from '../kvm/guest/migrate-program.js';
import { Kvm } from '../kvm/system.js';
import type { TrackerName } from '../tracking/tracker.js';
import { type GuestBackendName, GUEST_BACKENDS, type GuestCreateOptions, type GuestShape, type MigratableGuest } from './guest.js';
import { KvmGuest } from './kvm/kvm-guest.js';
import { ThreadsGuest } from './threads/threads-guest.js';

/** Whether a KVM guest can be made here, and if not, why (with the remedy). */
export function kvmAvailability(): { usable: true } | { usable: false; reason: string } {
  try {
    Kvm.open().close();
    return { usable: true };
  } catch (e) {
    if (e instanceof PostcopyError) return { usable: false, reason: e.message };
    throw e;
  }
}

/** The backend used when none is asked for, and why. */
export function defaultBackend(): { backend: GuestBackendName; why: string } {
  const k = kvmAvailability();
  return k.usable ? { backend: 'kvm', why: '/dev/kvm is usable' } : { backend: 'threads', why: `no KVM: ${k.reason}` };
}

/** The dirty tracker a source uses with `backend` when none is asked for. */
export function defaultTracker(backend: GuestBackendName): TrackerName {
  return backend === 'kvm' ? 'kvm-dirty-log' : 'uffd-wp';
}

export function isGuestBackend(v: unknown): v is GuestBackendName {
  return typeof v === 'string' && (GUEST_BACKENDS as readonly string[]).includes(v);
}

/** Makes a guest of `backend`; refuses a tracker the backend cannot use, saying why. */
export function createGuest(backend: GuestBackendName, shape: GuestShape, options: GuestCreateOptions = {}): MigratableGuest {
  if (backend === 'threads' && options.tracking === 'kvm-dirty-log') {
    throw new InvalidArgumentError("the threads guest has no KVM dirty log: its writes are tracked with userfaultfd write-protect", 'Use --dirty-tracking uffd-wp, or --guest kvm where /dev/kvm is usable');
  }
  return backend === 'kvm' ? KvmGuest.create(shape, options) : ThreadsGuest.create(shape, options);
}

/**
 * The program a backend runs, as the handshake names it: both sides must run the same
 * one (for KVM, the same code bytes; the threads guest's loop is versioned by name).
 */
export function programOf(backend: GuestBackendName): { name: string; codeBytes: number } {
  return backend === 'kvm' ? { name: MIGRATE_PROGRAM.name, codeBytes: MIGRATE_PROGRAM.code.length } : { name: 'migrate-threads/1', codeBytes: 0 };
}
