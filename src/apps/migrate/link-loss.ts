/**
 * Which failures are the link's (the connection closed, reset, went silent, could not be
 * made again) and which are the peer's or ours (a bad frame, an ERROR, a bug). In post-copy
 * the guest lives on both hosts, so a link loss pauses the migration and a recovery is
 * tried; anything else fails it (QEMU: postcopy-paused only for channel errors).
 */
import { PostcopyError } from '../../errors.js';

const LINK_CODES = new Set(['ERR_PEER_CLOSED', 'ERR_PEER_SILENT', 'ERR_CONNECTION', 'ERR_TRUNCATED', 'ERR_CONNECT', 'ERR_CLOSED']);

export function isLinkLoss(e: unknown): boolean {
  return LINK_CODES.has((e as { code?: unknown } | null)?.code as string);
}

export const DEFAULT_RECOVER_TIMEOUT_MS = 60_000;

/** Both ends send keepalives this often, so that an idle timeout tells a quiet link from a lost one. */
export const keepaliveFor = (timeoutMs: number) => (timeoutMs > 0 ? Math.max(1, Math.floor(timeoutMs / 4)) : 0);

/** Post-copy could not be resumed within --recover-timeout. */
export class RecoveryTimeoutError extends PostcopyError {
  override name = 'RecoveryTimeoutError';
  constructor(side: 'source' | 'destination', recoverTimeoutMs: number, last: Error | undefined) {
    super(
      'ERR_RECOVERY_TIMEOUT',
      `post-copy was paused (the link was lost) and the ${side === 'source' ? 'destination' : 'source'} did not resume it within ${recoverTimeoutMs} ms${last ? ` (last: ${last.message})` : ''}`,
      side === 'source'
        ? 'The guest runs on the destination and needs pages only this source had: restore the link and start again with a longer --recover-timeout'
        : 'Restore the link; the source retries until its own --recover-timeout (or run `postcopy migrate recover PID` on it)',
    );
  }
}

/** Backoff between reconnection attempts: 100 ms doubling to 500 ms (QEMU retries at once; a link that flaps should not be hammered, and one that is back should be used within half a second). */
export function backoffMs(attempt: number): number {
  return Math.min(500, 100 * 2 ** Math.max(0, attempt - 1));
}
