export * from './address.js';
export * from './errors.js';
export { SystemError, errnoName, isSystemError } from './native/errors.js';
export * from './uffd/constants.js';
export * from './uffd/events.js';
export * from './uffd/userfaultfd.js';
export * from './memory/constants.js';
export * from './memory/hugepages.js';
export * from './memory/mapping.js';
export * from './memory/backing.js';
export * from './memory/guest-memory.js';
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
