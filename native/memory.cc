// Shared-memory and mapping calls: memfd_create, mmap and friends, and views of mapped
// memory as ArrayBuffers. The TypeScript memory layer decides sizes, flags and layout.
#include "common.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace postcopy {

// memfdCreate(name, flags) -> fd
static Napi::Value MemfdCreate(const Napi::CallbackInfo& info) {
  std::string name = StringArg(info, 0);
  int fd = static_cast<int>(syscall(SYS_memfd_create, name.c_str(), U32(info, 1)));
  if (fd < 0) ThrowErrno(info.Env(), "memfd_create", errno);
  return Num(info.Env(), fd);
}

// mmap(addr, len, prot, flags, fd, offset) -> address
static Napi::Value Mmap(const Napi::CallbackInfo& info) {
  uint64_t len = U64(info, 1);
  void* p = mmap(reinterpret_cast<void*>(U64(info, 0)), len, I32(info, 2), I32(info, 3), I32(info, 4),
                 static_cast<off_t>(I64(info, 5)));
  if (p == MAP_FAILED) {
    ThrowErrno(info.Env(), "mmap", errno, U64(info, 0), len);
    return info.Env().Undefined();
  }
  return Num(info.Env(), static_cast<double>(reinterpret_cast<uintptr_t>(p)));
}

// munmap(addr, len)
static Napi::Value Munmap(const Napi::CallbackInfo& info) {
  uint64_t addr = U64(info, 0), len = U64(info, 1);
  if (munmap(reinterpret_cast<void*>(addr), len) != 0) ThrowErrno(info.Env(), "munmap", errno, addr, len);
  return info.Env().Undefined();
}

// mremap(oldAddr, oldLen, newLen, flags, newAddr) -> address
static Napi::Value Mremap(const Napi::CallbackInfo& info) {
  uint64_t old_addr = U64(info, 0), old_len = U64(info, 1);
  void* p = mremap(reinterpret_cast<void*>(old_addr), old_len, U64(info, 2), I32(info, 3),
                   reinterpret_cast<void*>(U64(info, 4)));
  if (p == MAP_FAILED) {
    ThrowErrno(info.Env(), "mremap", errno, old_addr, old_len);
    return info.Env().Undefined();
  }
  return Num(info.Env(), static_cast<double>(reinterpret_cast<uintptr_t>(p)));
}

// madvise(addr, len, advice)
static Napi::Value Madvise(const Napi::CallbackInfo& info) {
  uint64_t addr = U64(info, 0), len = U64(info, 1);
  if (madvise(reinterpret_cast<void*>(addr), len, I32(info, 2)) != 0)
    ThrowErrno(info.Env(), "madvise", errno, addr, len);
  return info.Env().Undefined();
}

// fallocate(fd, mode, offset, len); the range reported on error is the file range.
static Napi::Value Fallocate(const Napi::CallbackInfo& info) {
  uint64_t off = U64(info, 2), len = U64(info, 3);
  if (fallocate(I32(info, 0), I32(info, 1), static_cast<off_t>(off), static_cast<off_t>(len)) != 0)
    ThrowErrno(info.Env(), "fallocate", errno, off, len);
  return info.Env().Undefined();
}

// ftruncate(fd, len)
static Napi::Value Ftruncate(const Napi::CallbackInfo& info) {
  if (ftruncate(I32(info, 0), static_cast<off_t>(I64(info, 1))) != 0) ThrowErrno(info.Env(), "ftruncate", errno);
  return info.Env().Undefined();
}

// view(addr, len) -> ArrayBuffer over mapped memory, owned by the mapping, not by V8.
// The TypeScript owner detaches every view before it unmaps, so a stale view throws
// a TypeError instead of touching unmapped memory.
static Napi::Value View(const Napi::CallbackInfo& info) {
  return Napi::ArrayBuffer::New(info.Env(), reinterpret_cast<void*>(U64(info, 0)), U64(info, 1));
}

// detach(arrayBuffer)
static Napi::Value Detach(const Napi::CallbackInfo& info) {
  if (!info[0].IsArrayBuffer()) throw Napi::TypeError::New(info.Env(), "argument 0: expected an ArrayBuffer");
  Napi::ArrayBuffer ab = info[0].As<Napi::ArrayBuffer>();
  if (!ab.IsDetached()) ab.Detach();
  return info.Env().Undefined();
}

// addressOf(typedArray) -> address of its first byte (for use as a UFFDIO_COPY source).
static Napi::Value AddressOf(const Napi::CallbackInfo& info) {
  Napi::TypedArray ta = TypedArg(info, 0, "a typed array");
  uint8_t* base = static_cast<uint8_t*>(ta.ArrayBuffer().Data()) + ta.ByteOffset();
  return Num(info.Env(), static_cast<double>(reinterpret_cast<uintptr_t>(base)));
}

void InitMemory(Napi::Env env, Napi::Object exports) {
  exports.Set("memfdCreate", Napi::Function::New(env, MemfdCreate, "memfdCreate"));
  exports.Set("mmap", Napi::Function::New(env, Mmap, "mmap"));
  exports.Set("munmap", Napi::Function::New(env, Munmap, "munmap"));
  exports.Set("mremap", Napi::Function::New(env, Mremap, "mremap"));
  exports.Set("madvise", Napi::Function::New(env, Madvise, "madvise"));
  exports.Set("fallocate", Napi::Function::New(env, Fallocate, "fallocate"));
  exports.Set("ftruncate", Napi::Function::New(env, Ftruncate, "ftruncate"));
  exports.Set("view", Napi::Function::New(env, View, "view"));
  exports.Set("detach", Napi::Function::New(env, Detach, "detach"));
  exports.Set("addressOf", Napi::Function::New(env, AddressOf, "addressOf"));
}

}  // namespace postcopy
