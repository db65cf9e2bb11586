/**
 * The raw addon, typed once (as node-pty does with native.d.ts). Only src/native/binding.ts
 * loads it and only the layers in src/ import it; each function is one kernel call.
 * Arguments are trusted: callers validate them first.
 */
export interface Native {
  setErrorClass(ctor: new (syscall: string, errno: number, start?: number, len?: number) => Error): void;

  // userfaultfd
  userfaultfd(flags: number): number;
  userfaultfdDevice(path: string, flags: number): number;
  uffdApi(fd: number, features: bigint): [features: bigint, ioctls: bigint];
  uffdRegister(fd: number, start: number, len: number, mode: number): bigint;
  uffdUnregister(fd: number, start: number, len: number): void;
  uffdWake(fd: number, start: number, len: number): void;
  /** Bytes done; less than `len` means the kernel answered EAGAIN after that many. */
  uffdCopy(fd: number, dst: number, src: number, len: number, mode: number): number;
  uffdZeropage(fd: number, start: number, len: number, mode: number): number;
  uffdContinue(fd: number, start: number, len: number, mode: number): number;
  uffdPoison(fd: number, start: number, len: number, mode: number): number;
  uffdMove(fd: number, dst: number, src: number, len: number, mode: number): number;
  uffdWriteProtect(fd: number, start: number, len: number, mode: number): void;

  // memory
  memfdCreate(name: string, flags: number): number;
  mmap(addr: number, len: number, prot: number, flags: number, fd: number, offset: number): number;
  munmap(addr: number, len: number): void;
  mremap(oldAddr: number, oldLen: number, newLen: number, flags: number, newAddr: number): number;
  madvise(addr: number, len: number, advice: number): void;
  fallocate(fd: number, mode: number, offset: number, len: number): void;
  ftruncate(fd: number, len: number): void;
  /** An ArrayBuffer over mapped memory; it does not own the mapping. */
  view(addr: number, len: number): ArrayBuffer;
  detach(buffer: ArrayBuffer): void;
  addressOf(bytes: ArrayBufferView): number;

  // Unix sockets
  /** [bytes read, received fds...] (a trailing -1: MSG_CTRUNC, more fds were sent than maxFds), or -1 on EAGAIN. */
  recvmsg(fd: number, into: Uint8Array, maxFds: number): number[] | -1;
  /** Bytes sent with `fds` in SCM_RIGHTS, or -1 on EAGAIN. */
  sendmsg(fd: number, from: Uint8Array, fds: Int32Array): number;
  /** SO_PEERCRED of a connected Unix socket: [pid, uid, gid]. */
  peerCredentials(fd: number): [pid: number, uid: number, gid: number];

  // system
  open(path: string, flags: number, mode: number): number;
  close(fd: number): void;
  /** Bytes read, or -1 when a non-blocking descriptor had nothing (EAGAIN). */
  read(fd: number, into: Uint8Array): number;
  /** Bytes written, or -1 on EAGAIN. */
  write(fd: number, from: Uint8Array): number;
  /** lseek(2); -1 for ENXIO (no data, or no hole, at or after `offset`). */
  lseek(fd: number, offset: number, whence: number): number;
  /** `arg` is an integer argument or a struct the kernel reads and may fill. */
  ioctl(fd: number, request: number, arg: number | Uint8Array, name: string): number;
  /** `fds` holds [fd, events, revents] triples (at most 16); revents are written back. */
  poll(fds: Int32Array, timeoutMs: number): number;
  /** poll(fds) then, if `fd` is readable, read(fd, into): bytes read, or -1 (not readable, or EAGAIN). */
  pollRead(fds: Int32Array, timeoutMs: number, fd: number, into: Uint8Array): number;
  epollCreate(): number;
  epollCtl(epfd: number, op: number, fd: number, events: number, data: number): void;
  /** `out` receives [events, data] pairs. */
  epollWait(epfd: number, out: Uint32Array, timeoutMs: number): number;
  eventfd(initval: number, flags: number): number;
  setAffinity(tid: number, cpus: number[]): void;
  getAffinity(tid: number): number[];
  gettid(): number;
  getcpu(): number;
  /** CPU time used by the calling thread (CLOCK_THREAD_CPUTIME_ID), ns. */
  threadCpuNs(): number;
  pageSize(): number;
  forkExit(status: number): number;
  waitpid(pid: number): number;
  /** exit_group(status): every thread ends now, before any fd is closed; no exit handlers run. */
  exitNow(status: number): never;
}
