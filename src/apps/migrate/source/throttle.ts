/**
 * QEMU's auto-converge over the guest interface: when precopy stops converging, take CPU
 * time from the guest so it dirties memory more slowly than the link carries it. QEMU
 * sleeps each vCPU for a share of every 10 ms; here the whole guest is paused for that
 * share of every `periodMs` (pause() stops every worker between two accesses, run()
 * lets them go on), starting at 20% and raised by 10% each time precopy still does not
 * converge (QEMU's cpu-throttle-initial and -increment), up to 99%.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { MigratableGuest } from '../../../guest/guest.js';

export const THROTTLE_INITIAL = 20;
export const THROTTLE_INCREMENT = 10;
export const THROTTLE_MAX = 99;

export class Throttle {
  readonly #guest: MigratableGuest;
  readonly #periodMs: number;
  #percent = 0;
  #stopping = false;
  #loop: Promise<void> | undefined;
  #error: Error | undefined;

  constructor(guest: MigratableGuest, periodMs = 100) {
    this.#guest = guest;
    this.#periodMs = periodMs;
  }

  get percent(): number {
    return this.#percent;
  }

  /** Throttles harder; false when it is at its limit already (precopy should give up then). */
  raise(): boolean {
    if (this.#error) throw this.#error;
    if (this.#percent >= THROTTLE_MAX) return false;
    this.#percent = this.#percent === 0 ? THROTTLE_INITIAL : Math.min(THROTTLE_MAX, this.#percent + THROTTLE_INCREMENT);
    this.#loop ??= this.#run().catch((e: Error) => void (this.#error = e));
    return true;
  }

  /** Ends the throttling with the guest running (the switchover pauses it itself). */
  async stop(): Promise<void> {
    this.#stopping = true;
    await this.#loop;
    if (this.#error) throw this.#error;
  }

  async #run(): Promise<void> {
    while (!this.#stopping) {
      await sleep((this.#periodMs * (100 - this.#percent)) / 100);
      if (this.#stopping) break;
      await this.#guest.pause();
      await sleep((this.#periodMs * this.#percent) / 100);
      // Always run again before looking at stop: the guest is left as it was found.
      await this.#guest.run();
    }
  }
}
