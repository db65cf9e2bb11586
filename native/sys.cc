// General system calls the layers above need: file descriptors, generic ioctls (KVM's
// structures are packed in TypeScript), waiting (poll, epoll, eventfd), CPU placement
// and process creation for userfaultfd's fork event.
#include "common.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <csignal>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <string>

namespace postcopy {

namespace {
uint8_t* Bytes(const Napi::CallbackInfo& info, size_t i, size_t* len) {
  Napi::TypedArray ta = TypedArg(info, i, "a typed array");
  *len = ta.ByteLength();
  return static_cast<uint8_t*>(ta.ArrayBuffer().Data()) + ta.ByteOffset();
}

// [fd, events, revents] triples of `arr` into pollfds (at most `max`); returns how many.
size_t LoadPollfds(const Napi::Int32Array& arr, struct pollfd* p, size_t max) {
  size_t n = arr.ElementLength() / 3;
  if (n > max) n = max;
  for (size_t i = 0; i < n; i++) {
    p[i].fd = arr[i * 3];
    p[i].events = static_cast<short>(arr[i * 3 + 1]);
    p[i].revents = 0;
  }
  return n;
}

void StoreRevents(Napi::Int32Array& arr, const struct pollfd* p, size_t n) {
  for (size_t i = 0; i < n; i++) arr[i * 3 + 2] = p[i].revents;
}

// poll(2), restarted on EINTR: the count ready, or -1 with errno set.
int PollRetrying(struct pollfd* p, size_t n, int timeout) {
  int rc;
  do rc = poll(p, n, timeout); while (rc < 0 && errno == EINTR);
  return rc;
}

constexpr size_t kMaxPollfds = 16;
}  // namespace

// open(path, flags, mode) -> fd
static Napi::Value Open(const Napi::CallbackInfo& info) {
  std::string path = StringArg(info, 0);
  int fd = open(path.c_str(), I32(info, 1), U32(info, 2));
  if (fd < 0) ThrowErrno(info.Env(), ("open(" + path + ")").c_str(), errno);
  return Num(info.Env(), fd);
}

// close(fd)
static Napi::Value Close(const Napi::CallbackInfo& info) {
  if (close(I32(info, 0)) != 0 && errno != EINTR) ThrowErrno(info.Env(), "close", errno);
  return info.Env().Undefined();
}

// read(fd, bytes) -> bytes read, or -1 when a non-blocking descriptor has nothing (EAGAIN).
static Napi::Value Read(const Napi::CallbackInfo& info) {
  size_t len = 0;
  uint8_t* buf = Bytes(info, 1, &len);
  ssize_t n;
  do n = read(I32(info, 0), buf, len); while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN) return Num(info.Env(), -1);
    ThrowErrno(info.Env(), "read", errno);
    return info.Env().Undefined();
  }
  return Num(info.Env(), static_cast<double>(n));
}

// write(fd, bytes) -> bytes written, or -1 on EAGAIN.
static Napi::Value Write(const Napi::CallbackInfo& info) {
  size_t len = 0;
  uint8_t* buf = Bytes(info, 1, &len);
  ssize_t n;
  do n = write(I32(info, 0), buf, len); while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN) return Num(info.Env(), -1);
    ThrowErrno(info.Env(), "write", errno);
    return info.Env().Undefined();
  }
  return Num(info.Env(), static_cast<double>(n));
}

// lseek(fd, offset, whence) -> the new offset, or -1 on ENXIO (SEEK_DATA/SEEK_HOLE past
// the last data or hole: an answer, not an error).
static Napi::Value Lseek(const Napi::CallbackInfo& info) {
  off_t r = lseek(I32(info, 0), static_cast<off_t>(I64(info, 1)), I32(info, 2));
  if (r < 0) {
    if (errno == ENXIO) return Num(info.Env(), -1);
    ThrowErrno(info.Env(), "lseek", errno);
    return info.Env().Undefined();
  }
  return Num(info.Env(), static_cast<double>(r));
}

// ioctl(fd, request, arg, name) -> the ioctl's return value. `arg` is a Number (passed
// as an integer argument) or a TypedArray (passed as a pointer to its bytes, which the
// kernel may fill). `name` is only used to describe a failure.
static Napi::Value Ioctl(const Napi::CallbackInfo& info) {
  // The kernel takes the request as an unsigned int: a u32 bit pattern, exactly.
  unsigned long request = static_cast<uint32_t>(I32(info, 1));
  std::string name = "ioctl(" + StringArg(info, 3) + ")";
  int rc;
  if (info[2].IsTypedArray()) {
    size_t len = 0;
    uint8_t* buf = Bytes(info, 2, &len);
    rc = ioctl(I32(info, 0), request, buf);
  } else {
    rc = ioctl(I32(info, 0), request, static_cast<unsigned long>(I64(info, 2)));
  }
  if (rc < 0) {
    ThrowErrno(info.Env(), name.c_str(), errno);
    return info.Env().Undefined();
  }
  return Num(info.Env(), rc);
}

// poll(fds: Int32Array of [fd, events, revents] triples, timeoutMs) -> ready count, 0 on
// timeout. revents are written back into the array.
static Napi::Value Poll(const Napi::CallbackInfo& info) {
  Napi::Int32Array arr = TypedArg<Napi::Int32Array>(info, 0, napi_int32_array, "an Int32Array of [fd, events, revents] triples");
  int timeout = I32(info, 1);
  struct pollfd p[kMaxPollfds];
  size_t n = LoadPollfds(arr, p, kMaxPollfds);
  int rc = PollRetrying(p, n, timeout);
  if (rc < 0) {
    ThrowErrno(info.Env(), "poll", errno);
    return info.Env().Undefined();
  }
  StoreRevents(arr, p, n);
  return Num(info.Env(), rc);
}

// pollRead(fds, timeoutMs, fd, into) -> poll(2) then, if `fd` is readable, read(2) into
// `into`: bytes read, or -1 when it was not readable or had nothing (EAGAIN). revents are
// written back into `fds` as by Poll. One crossing of the JavaScript boundary for the two
// system calls a fault reader makes per wake-up; the same two calls, in the same order.
static Napi::Value PollRead(const Napi::CallbackInfo& info) {
  Napi::Int32Array arr = TypedArg<Napi::Int32Array>(info, 0, napi_int32_array, "an Int32Array of [fd, events, revents] triples");
  int timeout = I32(info, 1);
  int fd = I32(info, 2);
  size_t len = 0;
  uint8_t* buf = Bytes(info, 3, &len);
  struct pollfd p[kMaxPollfds];
  size_t n = LoadPollfds(arr, p, kMaxPollfds);
  if (PollRetrying(p, n, timeout) < 0) {
    ThrowErrno(info.Env(), "poll", errno);
    return info.Env().Undefined();
  }
  StoreRevents(arr, p, n);
  bool readable = false;
  for (size_t i = 0; i < n; i++) {
    if (p[i].fd == fd && (p[i].revents & POLLIN)) readable = true;
  }
  if (!readable) return Num(info.Env(), -1);
  ssize_t got;
  do got = read(fd, buf, len); while (got < 0 && errno == EINTR);
  if (got < 0) {
    if (errno == EAGAIN) return Num(info.Env(), -1);
    ThrowErrno(info.Env(), "read", errno);
    return info.Env().Undefined();
  }
  return Num(info.Env(), static_cast<double>(got));
}

// epollCreate() -> epoll fd (close-on-exec)
static Napi::Value EpollCreate(const Napi::CallbackInfo& info) {
  int fd = epoll_create1(EPOLL_CLOEXEC);
  if (fd < 0) ThrowErrno(info.Env(), "epoll_create1", errno);
  return Num(info.Env(), fd);
}

// epollCtl(epfd, op, fd, events, data)
static Napi::Value EpollCtl(const Napi::CallbackInfo& info) {
  struct epoll_event ev{};
  ev.events = U32(info, 3);
  ev.data.u64 = U32(info, 4);
  if (epoll_ctl(I32(info, 0), I32(info, 1), I32(info, 2), &ev) != 0) ThrowErrno(info.Env(), "epoll_ctl", errno);
  return info.Env().Undefined();
}

// epollWait(epfd, out: Uint32Array of [events, data] pairs, timeoutMs) -> ready count
static Napi::Value EpollWait(const Napi::CallbackInfo& info) {
  Napi::Uint32Array out = TypedArg<Napi::Uint32Array>(info, 1, napi_uint32_array, "a Uint32Array");
  int max = static_cast<int>(out.ElementLength() / 2);
  struct epoll_event evs[64];
  if (max > 64) max = 64;
  int rc;
  do rc = epoll_wait(I32(info, 0), evs, max, I32(info, 2)); while (rc < 0 && errno == EINTR);
  if (rc < 0) {
    ThrowErrno(info.Env(), "epoll_wait", errno);
    return info.Env().Undefined();
  }
  for (int i = 0; i < rc; i++) {
    out[i * 2] = evs[i].events;
    out[i * 2 + 1] = static_cast<uint32_t>(evs[i].data.u64);
  }
  return Num(info.Env(), rc);
}

// eventfd(initval, flags) -> fd
static Napi::Value Eventfd(const Napi::CallbackInfo& info) {
  int fd = eventfd(U32(info, 0), I32(info, 1));
  if (fd < 0) ThrowErrno(info.Env(), "eventfd", errno);
  return Num(info.Env(), fd);
}

// setAffinity(tid, cpus: number[]) ; tid 0 means the calling thread.
static Napi::Value SetAffinity(const Napi::CallbackInfo& info) {
  if (!info[1].IsArray()) throw Napi::TypeError::New(info.Env(), "argument 1: expected an array of CPU numbers");
  Napi::Array cpus = info[1].As<Napi::Array>();
  cpu_set_t set;
  CPU_ZERO(&set);
  for (uint32_t i = 0; i < cpus.Length(); i++) {
    Napi::Value c = cpus.Get(i);
    double d = c.IsNumber() ? c.As<Napi::Number>().DoubleValue() : -1;
    // CPU_SET past CPU_SETSIZE would write outside `set`.
    if (!(d >= 0 && d < CPU_SETSIZE) || d != std::floor(d)) ThrowArg(info, 1, "CPU numbers in [0, CPU_SETSIZE)");
    CPU_SET(static_cast<int>(d), &set);
  }
  if (sched_setaffinity(I32(info, 0), sizeof set, &set) != 0) ThrowErrno(info.Env(), "sched_setaffinity", errno);
  return info.Env().Undefined();
}

// getAffinity(tid) -> cpus: number[]
static Napi::Value GetAffinity(const Napi::CallbackInfo& info) {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(I32(info, 0), sizeof set, &set) != 0) {
    ThrowErrno(info.Env(), "sched_getaffinity", errno);
    return info.Env().Undefined();
  }
  Napi::Array out = Napi::Array::New(info.Env());
  uint32_t k = 0;
  for (int c = 0; c < CPU_SETSIZE; c++)
    if (CPU_ISSET(c, &set)) out.Set(k++, Napi::Number::New(info.Env(), c));
  return out;
}

// gettid() -> the calling thread's kernel thread id
static Napi::Value Gettid(const Napi::CallbackInfo& info) {
  return Num(info.Env(), static_cast<double>(syscall(SYS_gettid)));
}

// getcpu() -> the CPU the calling thread runs on now
static Napi::Value Getcpu(const Napi::CallbackInfo& info) { return Num(info.Env(), sched_getcpu()); }

// threadCpuNs() -> CPU time the calling thread has used, in nanoseconds
static Napi::Value ThreadCpuNs(const Napi::CallbackInfo& info) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return Num(info.Env(), static_cast<double>(ts.tv_sec) * 1e9 + static_cast<double>(ts.tv_nsec));
}

// pageSize() -> the base page size
static Napi::Value PageSize(const Napi::CallbackInfo& info) {
  return Num(info.Env(), static_cast<double>(sysconf(_SC_PAGESIZE)));
}

// forkExit(status) -> child pid. The child exits with `status` at once: it exists only so
// that the parent's mm is forked (userfaultfd's FORK event). With UFFD_FEATURE_EVENT_FORK
// the parent sleeps in the kernel until a reader has read the FORK event, so the reader
// must be another thread, and that thread must not need anything the forking thread
// holds. glibc's fork() holds the malloc arena locks across the system call (its atfork
// handling), which would deadlock a reader that allocates; so this is the raw clone system
// call, and the child leaves through the raw exit_group without touching libc state.
static Napi::Value ForkExit(const Napi::CallbackInfo& info) {
  int status = I32(info, 0);
  long pid = syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0);
  if (pid == 0) syscall(SYS_exit_group, status);
  if (pid < 0) ThrowErrno(info.Env(), "clone", errno);
  return Num(info.Env(), static_cast<double>(pid));
}

// waitpid(pid) -> exit status (or 128 + signal)
static Napi::Value Waitpid(const Napi::CallbackInfo& info) {
  int status = 0;
  pid_t rc;
  do rc = waitpid(I32(info, 0), &status, 0); while (rc < 0 && errno == EINTR);
  if (rc < 0) {
    ThrowErrno(info.Env(), "waitpid", errno);
    return info.Env().Undefined();
  }
  return Num(info.Env(), WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
}

// exitNow(status): exit_group at once. For a process whose vCPU threads are blocked in a
// userfaultfd wait that will never be answered: Node's own exit joins every worker thread
// (it would wait for ever), and closing the userfaultfd would let those vCPUs run on pages
// that never arrived. exit_group kills every thread before any fd is closed.
static Napi::Value ExitNow(const Napi::CallbackInfo& info) {
  syscall(SYS_exit_group, I32(info, 0));
  return info.Env().Undefined();
}

void InitSys(Napi::Env env, Napi::Object exports) {
  exports.Set("exitNow", Napi::Function::New(env, ExitNow, "exitNow"));
  exports.Set("open", Napi::Function::New(env, Open, "open"));
  exports.Set("close", Napi::Function::New(env, Close, "close"));
  exports.Set("read", Napi::Function::New(env, Read, "read"));
  exports.Set("write", Napi::Function::New(env, Write, "write"));
  exports.Set("lseek", Napi::Function::New(env, Lseek, "lseek"));
  exports.Set("ioctl", Napi::Function::New(env, Ioctl, "ioctl"));
  exports.Set("poll", Napi::Function::New(env, Poll, "poll"));
  exports.Set("pollRead", Napi::Function::New(env, PollRead, "pollRead"));
  exports.Set("epollCreate", Napi::Function::New(env, EpollCreate, "epollCreate"));
  exports.Set("epollCtl", Napi::Function::New(env, EpollCtl, "epollCtl"));
  exports.Set("epollWait", Napi::Function::New(env, EpollWait, "epollWait"));
  exports.Set("eventfd", Napi::Function::New(env, Eventfd, "eventfd"));
  exports.Set("setAffinity", Napi::Function::New(env, SetAffinity, "setAffinity"));
  exports.Set("getAffinity", Napi::Function::New(env, GetAffinity, "getAffinity"));
  exports.Set("gettid", Napi::Function::New(env, Gettid, "gettid"));
  exports.Set("getcpu", Napi::Function::New(env, Getcpu, "getcpu"));
  exports.Set("threadCpuNs", Napi::Function::New(env, ThreadCpuNs, "threadCpuNs"));
  exports.Set("pageSize", Napi::Function::New(env, PageSize, "pageSize"));
  exports.Set("forkExit", Napi::Function::New(env, ForkExit, "forkExit"));
  exports.Set("waitpid", Napi::Function::New(env, Waitpid, "waitpid"));
}

}  // namespace postcopy
