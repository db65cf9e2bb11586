/**
 * When a live save's rounds stop and the guest is paused for the rest (live-save.ts), in a
 * file of its own so the command line reads the defaults without loading the save.
 */
export interface LivePolicy {
  /** At most this many rounds while the guest runs. */
  readonly maxRounds: number;
  /** Pause as soon as the dirty set is no more than this many units. */
  readonly maxStaleUnits: number;
  /** When the rounds stop shrinking the set, throttle the guest (migrate's auto-converge) before giving up on it. */
  readonly autoConverge: boolean;
}

export const LIVE_DEFAULTS: LivePolicy = { maxRounds: 10, maxStaleUnits: 256, autoConverge: false };
