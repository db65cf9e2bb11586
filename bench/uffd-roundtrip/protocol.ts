/**
 * What the TypeScript run (ts-run.ts) and its two workers tell each other, what a run
 * reports, and the facts of the run's shape that both sides, and roundtrip.c, agree on.
 */

export const PAGE = 4096;
/** The byte the source page is filled with; the toucher's sum of loads checks the copies. */
export const PATTERN = 0xa5;
export const POLLIN = 1;

/**
 * poll: poll([uffd, stop eventfd]) then read(2) on a non-blocking uffd (the kernel's
 * demand_paging_test shape). read: blocking read(2) only, stopped by a sentinel fault.
 */
export type WaitMode = 'poll' | 'read';

export interface HandlerData {
  readonly wait: WaitMode;
  readonly cpu: number;
  readonly uffd: number;
  readonly features: bigint;
  readonly ioctls: bigint;
  readonly stopFd: number;
  readonly source: number;
  /** The page past the timed ones: a fault there means "stop" (read mode). */
  readonly sentinel: number;
}

export interface ToucherData {
  readonly wait: WaitMode;
  readonly cpu: number;
  readonly region: number;
  readonly pages: number;
}

/** Handler -> parent, once pinned and about to wait. */
export interface HandlerReady {
  readonly ready: true;
}

/** Handler -> parent, at exit. */
export interface HandlerDone {
  /** Pagefault messages for the timed pages (the sentinel not counted). */
  readonly faults: number;
  /** COPYs answered EEXIST (page already there); expected 0. */
  readonly eexist: number;
}

/** Toucher -> parent, at exit. */
export interface ToucherDone {
  readonly ns: number;
  readonly sum: number;
}

/** One run's result, as roundtrip.c prints it and ts-run.ts returns it. */
export interface RunResult {
  readonly impl: 'c' | 'ts';
  readonly wait: WaitMode;
  readonly pages: number;
  readonly toucherCpu: number;
  readonly handlerCpu: number;
  readonly ns: number;
  readonly faultsPerSec: number;
  readonly faults: number;
  readonly eexist: number;
  /** Every page faulted once and holds the source's bytes. */
  readonly ok: boolean;
}

/** One run's parameters. */
export interface RunSpec {
  readonly wait: WaitMode;
  readonly pages: number;
  readonly toucherCpu: number;
  readonly handlerCpu: number;
}
