/**
 * Why a snapshot (or a working-set record) is refused before any guest runs: one class,
 * with a stable code per reason (ERR_SNAPSHOT_MISSING, _STATE, _VERSION, _CORRUPT,
 * _TRUNCATED, _LAYOUT, ERR_RECORD). The CLI exits 3 for these: bad input, not a failure.
 */
import { PostcopyError } from '../../errors.js';

export class SnapshotInvalidError extends PostcopyError {
  override name = 'SnapshotInvalidError';
  constructor(code: string, detail: string, remedy?: string) {
    super(code, detail, remedy);
  }
}
