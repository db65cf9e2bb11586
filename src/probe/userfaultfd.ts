import { accessSync, constants as fs, readFileSync, statSync } from 'node:fs';
import { native } from '../native/binding.js';
import { isSystemError } from '../native/errors.js';
import { Feature, type FeatureName, type IoctlName, OpenFlag, ioctlNames, namesOf } from '../uffd/constants.js';
import { type ApiInfo, Userfaultfd } from '../uffd/userfaultfd.js';
import { hex } from '../util/format.js';
import { type Finding, failed, missing, ok } from './finding.js';

const DEVICE = '/dev/userfaultfd';
const SYSCTL = '/proc/sys/vm/unprivileged_userfaultfd';

/** The /dev/userfaultfd node: who may open it decides who may use userfaultfd without CAP_SYS_PTRACE. */
export interface DeviceNode {
  readonly exists: boolean;
  /** Permission bits, e.g. '0600'. */
  readonly mode?: string;
  readonly uid?: number;
  readonly gid?: number;
  /** Whether this process may open it for reading and writing (access(2)). */
  readonly accessible: boolean;
}

export interface UserfaultfdReport {
  /** Whether this process can get a userfaultfd that sees kernel-mode faults, as KVM's are. */
  readonly usable: Finding;
  /** userfaultfd(2) */
  readonly syscall: Finding;
  /** userfaultfd(2) with UFFD_USER_MODE_ONLY: allowed unprivileged, but blind to KVM's faults. */
  readonly syscallUserModeOnly: Finding;
  /** /dev/userfaultfd and USERFAULTFD_IOC_NEW (Linux 6.1+). */
  readonly device: Finding;
  readonly deviceNode: DeviceNode;
  /** vm.unprivileged_userfaultfd; null when the sysctl does not exist. */
  readonly unprivilegedSysctl: number | null;
  /** What UFFDIO_API grants, as a hex mask (JSON has no 64-bit integers) and by name. */
  readonly features: { readonly mask: string; readonly names: FeatureName[] } | null;
  /** The ioctls UFFDIO_API allows on a descriptor. */
  readonly ioctls: IoctlName[];
}

/** What to do when this process may not have a userfaultfd that sees kernel-mode faults. */
export const PERMISSION_REMEDY =
  'Run as root (CAP_SYS_PTRACE), or give this user access to /dev/userfaultfd (`chmod 0666 /dev/userfaultfd`, ' +
  'an ACL or a udev rule), or allow unprivileged use with `sysctl vm.unprivileged_userfaultfd=1`';
const NO_UFFD_REMEDY = 'Use a kernel built with CONFIG_USERFAULTFD=y';

/** Opens and closes a raw descriptor, and says how that went. */
function tryOpen(flags: number, via: 'syscall' | 'device'): Finding {
  try {
    const { fd } = Userfaultfd.rawOpen(flags, via);
    native.close(fd);
    return ok('opened');
  } catch (e) {
    if (isSystemError(e, 'ENOSYS')) return missing(`${(e as Error).message}: the kernel has no userfaultfd system call`, NO_UFFD_REMEDY);
    if (via === 'device' && isSystemError(e, 'ENOENT')) {
      return missing(`${(e as Error).message}: no ${DEVICE}`, `${DEVICE} exists on Linux 6.1+ with CONFIG_USERFAULTFD; elsewhere use userfaultfd(2) (${PERMISSION_REMEDY})`);
    }
    if (via === 'syscall' && isSystemError(e, 'EPERM')) {
      // The kernel's rule: without vm.unprivileged_userfaultfd=1, kernel-mode faults need CAP_SYS_PTRACE.
      return missing(`${(e as Error).message}: kernel-mode faults need CAP_SYS_PTRACE while vm.unprivileged_userfaultfd is 0`, PERMISSION_REMEDY);
    }
    return failed(e, PERMISSION_REMEDY);
  }
}

function deviceNode(): DeviceNode {
  let st;
  try {
    st = statSync(DEVICE);
  } catch {
    return { exists: false, accessible: false };
  }
  let accessible = true;
  try {
    accessSync(DEVICE, fs.R_OK | fs.W_OK);
  } catch {
    accessible = false;
  }
  return { exists: true, mode: (st.mode & 0o7777).toString(8).padStart(4, '0'), uid: st.uid, gid: st.gid, accessible };
}

function readSysctl(): number | null {
  try {
    return Number(readFileSync(SYSCTL, 'utf8').trim());
  } catch {
    return null;
  }
}

/**
 * UFFDIO_API with no features requested answers with everything the kernel offers. A
 * user-mode-only descriptor is asked when it is all this process can get: the features
 * are the kernel's, not the descriptor's.
 */
function queryApi(full: boolean, userModeOnly: boolean): ApiInfo | undefined {
  if (full) return Userfaultfd.query();
  if (!userModeOnly) return undefined;
  return Userfaultfd.query('syscall', { userModeOnly: true });
}

export function probeUserfaultfd(): UserfaultfdReport {
  const syscall = tryOpen(OpenFlag.CLOEXEC, 'syscall');
  const syscallUserModeOnly = tryOpen(OpenFlag.CLOEXEC | OpenFlag.USER_MODE_ONLY, 'syscall');
  const device = tryOpen(OpenFlag.CLOEXEC, 'device');

  let usable: Finding;
  if (syscall.status === 'ok') usable = ok('yes, through userfaultfd(2)');
  else if (device.status === 'ok') usable = ok(`yes, through ${DEVICE} (CAP_SYS_PTRACE not needed)`);
  else if (syscallUserModeOnly.status === 'ok') {
    usable = missing('only with UFFD_USER_MODE_ONLY, which does not see the faults KVM takes on guest memory', PERMISSION_REMEDY);
  } else usable = missing('no: neither userfaultfd(2) nor /dev/userfaultfd opens', syscall.remedy ?? PERMISSION_REMEDY);

  let features: UserfaultfdReport['features'] = null;
  let ioctls: IoctlName[] = [];
  const api = queryApi(syscall.status === 'ok' || device.status === 'ok', syscallUserModeOnly.status === 'ok');
  if (api) {
    features = { mask: hex(api.features), names: namesOf(Feature, api.features) };
    ioctls = ioctlNames(api.ioctls);
  }

  return { usable, syscall, syscallUserModeOnly, device, deviceNode: deviceNode(), unprivilegedSysctl: readSysctl(), features, ioctls };
}
