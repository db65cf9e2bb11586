// userfaultfd(2) and its ioctls. Structures and request numbers are defined here rather
// than taken from <linux/userfaultfd.h>: the build machine's headers (Linux 6.1) predate
// UFFDIO_POISON and UFFDIO_MOVE, which the running kernel (6.18) has.
#include "common.h"

#include <fcntl.h>
#include <linux/ioctl.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace postcopy {

namespace {

struct Range { uint64_t start, len; };
struct Api { uint64_t api, features, ioctls; };
struct Register { Range range; uint64_t mode, ioctls; };
struct Copy { uint64_t dst, src, len, mode; int64_t copy; };
struct Zeropage { Range range; uint64_t mode; int64_t zeropage; };
struct Move { uint64_t dst, src, len, mode; int64_t move; };
struct WriteProtect { Range range; uint64_t mode; };
struct Continue { Range range; uint64_t mode; int64_t mapped; };
struct Poison { Range range; uint64_t mode; int64_t updated; };

constexpr unsigned kUffdio = 0xAA;
constexpr unsigned long kApi = _IOWR(kUffdio, 0x3F, Api);
constexpr unsigned long kRegister = _IOWR(kUffdio, 0x00, Register);
constexpr unsigned long kUnregister = _IOR(kUffdio, 0x01, Range);
constexpr unsigned long kWake = _IOR(kUffdio, 0x02, Range);
constexpr unsigned long kCopy = _IOWR(kUffdio, 0x03, Copy);
constexpr unsigned long kZeropage = _IOWR(kUffdio, 0x04, Zeropage);
constexpr unsigned long kMove = _IOWR(kUffdio, 0x05, Move);
constexpr unsigned long kWriteProtect = _IOWR(kUffdio, 0x06, WriteProtect);
constexpr unsigned long kContinue = _IOWR(kUffdio, 0x07, Continue);
constexpr unsigned long kPoison = _IOWR(kUffdio, 0x08, Poison);
constexpr unsigned long kIocNew = _IO(kUffdio, 0x00);  // USERFAULTFD_IOC_NEW on /dev/userfaultfd

Napi::Value BigU(Napi::Env env, uint64_t v) { return Napi::BigInt::New(env, v); }

// The filling ioctls (COPY, ZEROPAGE, CONTINUE, POISON, MOVE) share one contract: on
// success the whole range was done; on EAGAIN the kernel did `done` bytes (possibly 0)
// and the caller should retry the rest; any other errno is a failure. We return the
// bytes done, so a result below the requested length is exactly "EAGAIN after N bytes".
Napi::Value FillResult(Napi::Env env, int rc, int64_t done, uint64_t len, const char* name,
                       uint64_t start) {
  if (rc == 0) return Num(env, static_cast<double>(len));
  int err = errno;
  if (err == EAGAIN) return Num(env, done > 0 ? static_cast<double>(done) : 0);
  ThrowErrno(env, name, err, start, len);
  return env.Undefined();
}

}  // namespace

// userfaultfd(flags) -> fd, through the system call.
static Napi::Value Userfaultfd(const Napi::CallbackInfo& info) {
  int fd = static_cast<int>(syscall(SYS_userfaultfd, I32(info, 0)));
  if (fd < 0) ThrowErrno(info.Env(), "userfaultfd", errno);
  return Num(info.Env(), fd);
}

// userfaultfdDevice(path, flags) -> fd, through USERFAULTFD_IOC_NEW on /dev/userfaultfd
// (Linux 6.1+), which is governed by the device node's permissions instead of
// vm.unprivileged_userfaultfd.
static Napi::Value UserfaultfdDevice(const Napi::CallbackInfo& info) {
  std::string path = StringArg(info, 0);
  int dev = open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (dev < 0) {
    ThrowErrno(info.Env(), ("open(" + path + ")").c_str(), errno);
    return info.Env().Undefined();
  }
  int fd = ioctl(dev, kIocNew, I32(info, 1));
  int err = errno;
  close(dev);
  if (fd < 0) ThrowErrno(info.Env(), "ioctl(USERFAULTFD_IOC_NEW)", err);
  return Num(info.Env(), fd);
}

// uffdApi(fd, features: bigint) -> [features: bigint, ioctls: bigint]
static Napi::Value UffdApi(const Napi::CallbackInfo& info) {
  Api api{0xAA, BigU64(info, 1), 0};
  if (ioctl(I32(info, 0), kApi, &api) != 0) {
    ThrowErrno(info.Env(), "ioctl(UFFDIO_API)", errno);
    return info.Env().Undefined();
  }
  Napi::Array out = Napi::Array::New(info.Env(), 2);
  out.Set(0u, BigU(info.Env(), api.features));
  out.Set(1u, BigU(info.Env(), api.ioctls));
  return out;
}

// uffdRegister(fd, start, len, mode) -> ioctls: bigint
static Napi::Value UffdRegister(const Napi::CallbackInfo& info) {
  Register r{{U64(info, 1), U64(info, 2)}, U64(info, 3), 0};
  if (ioctl(I32(info, 0), kRegister, &r) != 0) {
    ThrowErrno(info.Env(), "ioctl(UFFDIO_REGISTER)", errno, r.range.start, r.range.len);
    return info.Env().Undefined();
  }
  return BigU(info.Env(), r.ioctls);
}

static Napi::Value RangeCall(const Napi::CallbackInfo& info, unsigned long request, const char* name) {
  Range r{U64(info, 1), U64(info, 2)};
  if (ioctl(I32(info, 0), request, &r) != 0) ThrowErrno(info.Env(), name, errno, r.start, r.len);
  return info.Env().Undefined();
}

// uffdUnregister(fd, start, len)
static Napi::Value UffdUnregister(const Napi::CallbackInfo& info) {
  return RangeCall(info, kUnregister, "ioctl(UFFDIO_UNREGISTER)");
}

// uffdWake(fd, start, len)
static Napi::Value UffdWake(const Napi::CallbackInfo& info) {
  return RangeCall(info, kWake, "ioctl(UFFDIO_WAKE)");
}

// uffdCopy(fd, dst, src, len, mode) -> bytes done
static Napi::Value UffdCopy(const Napi::CallbackInfo& info) {
  Copy c{U64(info, 1), U64(info, 2), U64(info, 3), U64(info, 4), 0};
  int rc = ioctl(I32(info, 0), kCopy, &c);
  return FillResult(info.Env(), rc, c.copy, c.len, "ioctl(UFFDIO_COPY)", c.dst);
}

// uffdZeropage(fd, start, len, mode) -> bytes done
static Napi::Value UffdZeropage(const Napi::CallbackInfo& info) {
  Zeropage z{{U64(info, 1), U64(info, 2)}, U64(info, 3), 0};
  int rc = ioctl(I32(info, 0), kZeropage, &z);
  return FillResult(info.Env(), rc, z.zeropage, z.range.len, "ioctl(UFFDIO_ZEROPAGE)", z.range.start);
}

// uffdContinue(fd, start, len, mode) -> bytes done
static Napi::Value UffdContinue(const Napi::CallbackInfo& info) {
  Continue c{{U64(info, 1), U64(info, 2)}, U64(info, 3), 0};
  int rc = ioctl(I32(info, 0), kContinue, &c);
  return FillResult(info.Env(), rc, c.mapped, c.range.len, "ioctl(UFFDIO_CONTINUE)", c.range.start);
}

// uffdPoison(fd, start, len, mode) -> bytes done
static Napi::Value UffdPoison(const Napi::CallbackInfo& info) {
  Poison p{{U64(info, 1), U64(info, 2)}, U64(info, 3), 0};
  int rc = ioctl(I32(info, 0), kPoison, &p);
  return FillResult(info.Env(), rc, p.updated, p.range.len, "ioctl(UFFDIO_POISON)", p.range.start);
}

// uffdMove(fd, dst, src, len, mode) -> bytes done
static Napi::Value UffdMove(const Napi::CallbackInfo& info) {
  Move m{U64(info, 1), U64(info, 2), U64(info, 3), U64(info, 4), 0};
  int rc = ioctl(I32(info, 0), kMove, &m);
  return FillResult(info.Env(), rc, m.move, m.len, "ioctl(UFFDIO_MOVE)", m.dst);
}

// uffdWriteProtect(fd, start, len, mode)
static Napi::Value UffdWriteProtect(const Napi::CallbackInfo& info) {
  WriteProtect w{{U64(info, 1), U64(info, 2)}, U64(info, 3)};
  if (ioctl(I32(info, 0), kWriteProtect, &w) != 0)
    ThrowErrno(info.Env(), "ioctl(UFFDIO_WRITEPROTECT)", errno, w.range.start, w.range.len);
  return info.Env().Undefined();
}

void InitUffd(Napi::Env env, Napi::Object exports) {
  exports.Set("userfaultfd", Napi::Function::New(env, Userfaultfd, "userfaultfd"));
  exports.Set("userfaultfdDevice", Napi::Function::New(env, UserfaultfdDevice, "userfaultfdDevice"));
  exports.Set("uffdApi", Napi::Function::New(env, UffdApi, "uffdApi"));
  exports.Set("uffdRegister", Napi::Function::New(env, UffdRegister, "uffdRegister"));
  exports.Set("uffdUnregister", Napi::Function::New(env, UffdUnregister, "uffdUnregister"));
  exports.Set("uffdWake", Napi::Function::New(env, UffdWake, "uffdWake"));
  exports.Set("uffdCopy", Napi::Function::New(env, UffdCopy, "uffdCopy"));
  exports.Set("uffdZeropage", Napi::Function::New(env, UffdZeropage, "uffdZeropage"));
  exports.Set("uffdContinue", Napi::Function::New(env, UffdContinue, "uffdContinue"));
  exports.Set("uffdPoison", Napi::Function::New(env, UffdPoison, "uffdPoison"));
  exports.Set("uffdMove", Napi::Function::New(env, UffdMove, "uffdMove"));
  exports.Set("uffdWriteProtect", Napi::Function::New(env, UffdWriteProtect, "uffdWriteProtect"));
}

}  // namespace postcopy
