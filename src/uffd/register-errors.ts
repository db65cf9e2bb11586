/**
 * Why UFFDIO_REGISTER refused a range, as far as the range's mappings show it. The kernel
 * answers EINVAL for most refusals (MINOR on memory without a page cache, a hugetlb range
 * not in whole huge pages, a hole in the range, a kind of mapping userfaultfd does not
 * handle); /proc/self/smaps tells them apart after the fact. Read only on failure.
 */
import { readFileSync } from 'node:fs';
import type { SystemError } from '../native/errors.js';
import { formatRange, formatSize } from '../util/format.js';
import { RegisterMode } from './constants.js';

/** One mapping (VMA) of /proc/self/smaps, with what registration cares about. */
export interface VmaInfo {
  readonly start: number;
  readonly end: number;
  readonly path: string;
  readonly inode: number;
  readonly kernelPageSize: number;
  /** VmFlags mnemonics: sh (shared), ht (hugetlb), um/uw/ui (registered MISSING/WP/MINOR), pf/io (PFN/IO maps). */
  readonly flags: ReadonlySet<string>;
}

/** The mappings of this process that overlap [start, end), in address order. */
export function mappingsIn(start: number, end: number, smaps = '/proc/self/smaps'): VmaInfo[] {
  const out: VmaInfo[] = [];
  let current: { start: number; end: number; path: string; inode: number; kernelPageSize: number } | undefined;
  for (const line of readFileSync(smaps, 'utf8').split('\n')) {
    const head = /^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ (\d+)\s*(.*)$/.exec(line);
    if (head) {
      const s = parseInt(head[1]!, 16);
      const e = parseInt(head[2]!, 16);
      current = s < end && e > start ? { start: s, end: e, path: head[4]!.trim(), inode: Number(head[3]), kernelPageSize: 4096 } : undefined;
      continue;
    }
    if (!current) continue;
    const kps = /^KernelPageSize:\s+(\d+) kB/.exec(line);
    if (kps) current.kernelPageSize = Number(kps[1]) * 1024;
    else if (line.startsWith('VmFlags:')) {
      out.push({ ...current, flags: new Set(line.slice(8).trim().split(/\s+/)) });
      current = undefined;
    }
  }
  return out;
}

/** What kind of memory a mapping is, in the words of the messages. */
export function memoryKind(v: VmaInfo): 'hugetlb' | 'shmem' | 'private anonymous' | 'anonymous (shared)' | 'file' | 'special' {
  if (v.flags.has('ht')) return 'hugetlb';
  if (v.flags.has('pf') || v.flags.has('io')) return 'special';
  if (/^\/memfd:|^\/dev\/shm\/|^\/SYSV|^\/dev\/zero/.test(v.path)) return 'shmem';
  if (v.inode === 0) {
    if (v.path.startsWith('[') && !v.path.startsWith('[anon') && v.path !== '[heap]' && v.path !== '[stack]') return 'special';
    return v.flags.has('sh') ? 'anonymous (shared)' : 'private anonymous';
  }
  return 'file';
}

/** The part of mapping `v` inside [start, end), and its path. */
function describeVma(v: VmaInfo, start: number, end: number): string {
  const s = Math.max(start, v.start);
  return `${formatRange(s, Math.min(end, v.end) - s)}${v.path ? ` (${v.path})` : ''}`;
}

/** The reason and remedy for a refused registration of [start, start+length) in `modes`, or undefined. */
export function registerRefusal(code: string, start: number, length: number, modes: number, vmas = mappingsIn(start, start + length)): { reason: string; remedy?: string } | undefined {
  const end = start + length;
  let at = start;
  for (const v of vmas) {
    if (v.start > at) return { reason: `nothing is mapped at ${formatRange(at, v.start - at)}, inside the range`, remedy: 'Register only mapped memory (a Mapping or Backing of the range)' };
    at = v.end;
  }
  if (at < end) return { reason: `nothing is mapped at ${formatRange(at, end - at)}, inside the range`, remedy: 'Register only mapped memory (a Mapping or Backing of the range)' };
  if (code === 'EBUSY') {
    const taken = vmas.find((v) => v.flags.has('um') || v.flags.has('uw') || v.flags.has('ui'));
    if (taken) return { reason: `${describeVma(taken, start, end)} is already registered with another userfaultfd`, remedy: 'Unregister it there first, or register it once and share that descriptor' };
    return undefined;
  }
  for (const v of vmas) {
    const kind = memoryKind(v);
    if (modes & RegisterMode.MINOR && kind !== 'hugetlb' && kind !== 'shmem' && kind !== 'anonymous (shared)') {
      return {
        reason:
          `MINOR faults need a page cache (shared memory: shmem or a memfd, or hugetlbfs) to map pages from; ` +
          `${describeVma(v, start, end)} is ${kind} memory`,
        remedy: kind === 'private anonymous'
          ? 'Use MISSING faults (resolved with UFFDIO_COPY) on private memory, or back the range with a memfd mapped MAP_SHARED (Backing source shmem or shared_hugetlb)'
          : 'Back the range with shmem or hugetlbfs (Backing source shmem or shared_hugetlb)',
      };
    }
    if (kind === 'hugetlb') {
      const page = v.kernelPageSize;
      if (start % page !== 0 || length % page !== 0) {
        return { reason: `${describeVma(v, start, end)} is hugetlb memory of ${formatSize(page)} pages: it registers in whole pages`, remedy: `Align start and length to ${formatSize(page)}` };
      }
    }
    if (kind === 'special' || kind === 'file') {
      return {
        reason: `${describeVma(v, start, end)} is ${kind === 'file' ? 'a mapping of a regular file' : 'a special mapping'}, not anonymous, shmem or hugetlbfs memory: userfaultfd does not register it` +
          (/kvm|gmem/.test(v.path) ? ' (on Linux 6.18 that includes guest_memfd)' : ''),
        remedy: 'Register anonymous, shmem (memfd) or hugetlbfs memory',
      };
    }
  }
  return undefined;
}

/** `e` (a refused UFFDIO_REGISTER) with the reason, when the mappings show one; else `e`. */
export function explainRegisterError(e: SystemError, start: number, length: number, modes: number): SystemError {
  if (!['EINVAL', 'EBUSY', 'ENOMEM'].includes(e.code)) return e;
  let why: ReturnType<typeof registerRefusal>;
  try {
    why = registerRefusal(e.code, start, length, modes);
  } catch {
    return e; // no /proc: the kernel's answer as it is
  }
  return why ? e.explain(why.reason, why.remedy) : e;
}
