export * from './address.js';
export * from './errors.js';
export { SystemError, errnoName, isSystemError } from './native/errors.js';
export * from './uffd/constants.js';
export * from './uffd/events.js';
export * from './uffd/userfaultfd.js';
export * from './uffd/poll.js';
export { fillAll, type FillOp } from './uffd/fill.js';
export { mappingsIn, registerRefusal, type VmaInfo } from './uffd/register-errors.js';
export * from './memory/constants.js';
export * from './memory/hugepages.js';
export * from './memory/mapping.js';
export * from './memory/backing.js';
export * from './memory/guest-memory.js';
export * from './memory/pattern.js';
export { uffdFeaturesFor } from './memory/uffd-features.js';
export { Pager, type PagerOptions, type PagerStats } from './pager/pager.js';
export type { Resolution, ReaderStats } from './pager/resolution.js';
export { Histogram, type HistogramData } from './metrics/histogram.js';
export {
  KVM_API_VERSION,
  KvmIoctl,
  KvmCap,
  VmType,
  GuestMemfdFlag,
  KvmMemFlag,
  type KvmIoctlName,
  type KvmCapName,
  type VmTypeName,
  type GuestMemfdFlagName,
} from './kvm/constants.js';
export { Kvm, KVM_DEVICE } from './kvm/system.js';
export { Vm, GUEST_MEMFD_MAPPABLE } from './kvm/vm.js';
export * from './probe/index.js';
export { KvmExitReason, KvmInternalError, KVM_EXIT_IO_IN, KVM_EXIT_IO_OUT, KVM_MEMORY_EXIT_FLAG_PRIVATE, exitReasonName, type KvmExitReasonName } from './kvm/constants.js';
export { type MemoryRegion } from './kvm/vm.js';
export { Vcpu, type VcpuHandle } from './kvm/vcpu.js';
export * from './kvm/exit.js';
export type { Regs, Sregs, Segment, DTable } from './kvm/x86/regs.js';
export type { CpuidEntry } from './kvm/x86/cpuid.js';
export { GuestVm, createGuestVm, type GuestSlot, type GuestVmOptions, type SystemSlot } from './kvm/guest-vm.js';
export { GuestPort, EXCEPTION_NAMES, type GuestProgram } from './kvm/guest/program.js';
export * from './kvm/guest/bench-program.js';
export type { SystemLayout } from './kvm/guest/system-image.js';
export { VcpuThread, StartGate, runVcpus, type VcpuThreadOptions } from './kvm/vcpu-thread.js';
export type * from './kvm/vcpu-run.js';
export {
  Channel,
  Listener,
  FrameDecoder,
  ProtocolError,
  ConnectError,
  ListenError,
  encodeHeader,
  FRAME_HEADER_SIZE,
  DEFAULT_MAX_PAYLOAD,
  DEFAULT_IDLE_TIMEOUT_MS,
  DEFAULT_HIGH_WATER_MARK,
  type Frame,
  type KnownTypes,
  type ChannelOptions,
  type ConnectOptions,
  type ListenOptions,
  type FrameDecoderOptions,
  type ProtocolErrorCode,
} from './transport/index.js';
export { DirtyLog, enableManualDirtyLog } from './kvm/dirty-log.js';
export * from './kvm/guest/migrate-program.js';
export * from './guest/guest.js';
export { KvmGuest } from './guest/kvm/kvm-guest.js';
export { ThreadsGuest } from './guest/threads/threads-guest.js';
export { createGuest, defaultBackend, kvmAvailability } from './guest/open.js';
export { checkGuest, type OracleResult } from './guest/oracle.js';
export * from './tracking/index.js';
export { runSource, type SourceOptions, type SourceReport, type SourceEvent, type SwitchoverPolicy } from './apps/migrate/source/source.js';
export { runDestination, FrozenGuestError, type DestinationOptions, type DestinationReport, type DestinationEvent } from './apps/migrate/destination/destination.js';
export { Session, type SessionState } from './apps/migrate/session.js';
export { MigrationProtocolError, PROTOCOL_VERSION, type MigrationMode, type Hello } from './apps/migrate/protocol.js';
