/**
 * How a fault reader resolves a page fault: plain data, so it can be handed to reader
 * threads. The pager knows nothing of where the bytes come from beyond this.
 */
export type Resolution =
  /** MISSING faults: UFFDIO_COPY the page from `source + (page - regionStart)`. */
  | { readonly kind: 'copy'; readonly regionStart: number; readonly source: number }
  /** MINOR faults: the page is already in the page cache (filled through the alias); UFFDIO_CONTINUE maps it. */
  | { readonly kind: 'continue' }
  /** MISSING faults: map the zero page. */
  | { readonly kind: 'zeropage' };

/** What one fault reader did. */
export interface ReaderStats {
  readonly uffd: number;
  readonly threadId: number;
  readonly faults: number;
  readonly missing: number;
  readonly minor: number;
  readonly wp: number;
  /** Resolutions that found the page already mapped (EEXIST): another reader or an earlier fault got there first. */
  readonly exists: number;
  /** Partial fills (EAGAIN) retried. */
  readonly retries: number;
  /** Wake-ups that found nothing to read (another reader took it). */
  readonly emptyReads: number;
  /** CPU time this reader thread used, ns. */
  readonly cpuNs: number;
  /** Time from reading a fault to having resolved it, ns. */
  readonly service: import('../metrics/histogram.js').HistogramData;
}
