export type { DirtyTracker, TrackerName } from './tracker.js';
export { TRACKER_NAMES } from './tracker.js';
export { UffdWpTracker, type TrackedRange, type UffdWpOptions } from './uffd-wp.js';
export { KvmDirtyLogTracker } from './kvm-dirty-log.js';
export { probeUffdWp, type UffdWpProbe } from './probe.js';
export { PagemapScan, PageCategory, ScanFlag, PAGEMAP_SCAN, type ScanQuery } from './pagemap-scan.js';
