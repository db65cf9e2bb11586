/**
 * poll(2) for fault readers: the event bits (asm-generic/poll.h, the kernel's names) and
 * the [fd, events, revents] triples that Userfaultfd.poll and pollRead take.
 */

export const POLLIN = 0x1;
export const POLLPRI = 0x2;
export const POLLOUT = 0x4;
export const POLLERR = 0x8;
export const POLLHUP = 0x10;
export const POLLNVAL = 0x20;

/** At most this many descriptors in one poll set (the addon's pollfd array). */
export const MAX_POLL_FDS = 16;

/**
 * A poll set: `[[uffd.fd, POLLIN], [stopFd, POLLIN]]` becomes the Int32Array of
 * [fd, events, revents] triples that Userfaultfd.poll/pollRead fill in.
 */
export function pollFds(entries: readonly (readonly [fd: number, events: number])[]): Int32Array {
  const out = new Int32Array(entries.length * 3);
  entries.forEach(([fd, events], i) => {
    out[i * 3] = fd;
    out[i * 3 + 1] = events;
  });
  return out;
}

/** The revents poll wrote for entry `i` of a poll set. */
export function revents(fds: Int32Array, i: number): number {
  return fds[i * 3 + 2] ?? 0;
}
