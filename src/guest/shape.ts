/**
 * What both guest backends share about their memory: the shape check (every worker gets
 * a whole number of backing pages), the slices, the preallocation of the pages arriving
 * bytes go to, and the lower scheduling weight of the threads that run the workload.
 */
import { setPriority } from 'node:os';
import { InvalidArgumentError } from '../errors.js';
import type { Backing } from '../memory/backing.js';
import { Madvise } from '../memory/constants.js';
import { isSystemError } from '../native/errors.js';
import { formatSize } from '../util/format.js';
import { GUEST_PAGE, type GuestShape } from './guest.js';

/** The nice value of the threads that run a guest's workload (see renice). */
export const VCPU_NICE = 5;

/** Checks a shape once: every worker gets a whole number of backing pages. */
export function checkShape(shape: GuestShape, unit: number): void {
  const { size, vcpus } = shape;
  if (!Number.isSafeInteger(vcpus) || vcpus < 1) throw new InvalidArgumentError(`a guest needs at least one vCPU or thread, got ${vcpus}`);
  if (!Number.isSafeInteger(size) || size <= 0 || size % (unit * vcpus) !== 0) {
    throw new InvalidArgumentError(`guest memory ${size} bytes does not split into ${vcpus} slices of whole ${formatSize(unit)} pages`, `Use a size that is a multiple of ${formatSize(unit * vcpus)}`);
  }
}

/** Memory handed to a guest (GuestCreateOptions.backing) holds exactly the shape's bytes. */
export function checkBacking(shape: GuestShape, backing: Backing): void {
  if (backing.closed) throw new InvalidArgumentError('the memory handed to the guest is closed');
  if (backing.size !== shape.size) throw new InvalidArgumentError(`the memory handed to the guest is ${backing.size} bytes, the guest's shape ${shape.size}`);
}

/** Worker i's slice: its first guest address and its 4 KiB pages. */
export function sliceOf(shape: GuestShape, i: number): { guestAddress: number; pages: number } {
  const bytes = shape.size / shape.vcpus;
  return { guestAddress: shape.guestAddress + i * bytes, pages: bytes / GUEST_PAGE };
}

/**
 * Allocates and maps every page of the memory where arriving pages will be written (the
 * alias of shared memory, the memory itself when private), before any arrive: a page
 * first touched by the receive path costs a fault and a zeroing in the middle of the
 * stream, which on this kind of host cuts loopback throughput to a third. Done before
 * the destination accepts, like a VMM that preallocates guest RAM. Returns whether the
 * kernel did it (MADV_POPULATE_WRITE, Linux 5.14+); a false leaves pages to be faulted in.
 */
export function populateForArrivals(backing: Backing): boolean {
  try {
    (backing.alias ?? backing.primary).advise(Madvise.POPULATE_WRITE);
    return true;
  } catch (e) {
    if (isSystemError(e, 'EINVAL')) return false;
    throw e;
  }
}

/**
 * The guest's loop never idles. On a host with as few CPUs as workers, the threads that
 * serve it (the event loop that moves pages, the fault reader) would wait a whole
 * scheduler slice behind a worker for every page; a lower weight for the workers lets
 * them in at once. Best effort: leave the default where it is not allowed.
 */
export function renice(tids: readonly number[], nice: number): void {
  if (nice === 0) return;
  for (const tid of tids) {
    try {
      setPriority(tid, nice);
    } catch {
      return;
    }
  }
}
