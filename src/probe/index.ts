export { probe, type ProbeOptions, type ProbeReport } from './probe.js';
export { type Finding, walkFindings } from './finding.js';
export { PROBED_MODES, type ProbedMode, type BackingReport, type RegistrationFinding } from './backings.js';
export type { UserfaultfdReport, DeviceNode } from './userfaultfd.js';
export type { KvmReport, CapabilityFinding, UnmergedCapability } from './kvm.js';
export type { HugepagesReport, HugepagePoolReport } from './hugepages.js';
export type { PrivilegesReport } from './privileges.js';
export type { CpuReport } from './cpu.js';
export { type TrackingReport } from './tracking.js';
