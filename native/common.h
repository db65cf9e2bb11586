// Shared helpers for the postcopy addon. The addon is the kernel boundary and nothing
// more: it converts arguments, makes the call, and reports the kernel's answer. Every
// decision (which call, which flags, what an errno means to the caller) is TypeScript's.
#pragma once

#include <napi.h>
#include <cerrno>
#include <cstdint>
#include <cmath>
#include <string>

namespace postcopy {

// Throws the JavaScript SystemError class that TypeScript registered at load time
// (see src/native/errors.ts), so the message text is owned by TypeScript.
// `start`/`len` describe the address range the call was about; pass len == 0 when
// the call has no range.
void ThrowErrno(Napi::Env env, const char* syscall, int err, uint64_t start = 0, uint64_t len = 0);

// Argument readers. TypeScript validates types and ranges before calling (and owns the
// messages a person reads); these convert, and refuse what would not convert exactly
// instead of passing the kernel a truncated, wrapped or rounded value: a RangeError
// (TypeError for a wrong type) naming the argument's position, thrown as a C++ exception
// that node-addon-api turns into a JavaScript one before any system call is made.
// Addresses and lengths travel as Numbers: user-space addresses are below 2^47, well
// inside a double's exact integer range (2^53).
[[noreturn]] inline void ThrowArg(const Napi::CallbackInfo& info, size_t i, const char* expected) {
  throw Napi::RangeError::New(info.Env(), "argument " + std::to_string(i) + ": expected " + expected);
}
inline double IntegerArg(const Napi::CallbackInfo& info, size_t i, double lo, double hi, const char* expected) {
  Napi::Value v = info[i];
  if (!v.IsNumber()) throw Napi::TypeError::New(info.Env(), "argument " + std::to_string(i) + ": expected a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= lo && d <= hi) || d != std::floor(d)) ThrowArg(info, i, expected);
  return d;
}
constexpr double kMaxSafe = 9007199254740991.0;  // 2^53 - 1
inline uint64_t U64(const Napi::CallbackInfo& info, size_t i) {
  return static_cast<uint64_t>(IntegerArg(info, i, 0, kMaxSafe, "a non-negative safe integer"));
}
inline int64_t I64(const Napi::CallbackInfo& info, size_t i) {
  return static_cast<int64_t>(IntegerArg(info, i, -kMaxSafe, kMaxSafe, "a safe integer"));
}
// 32-bit flags and descriptors: an int32, or a u32 bit pattern (flags with bit 31 set).
inline int32_t I32(const Napi::CallbackInfo& info, size_t i) {
  double d = IntegerArg(info, i, -2147483648.0, 4294967295.0, "a 32-bit integer");
  return static_cast<int32_t>(static_cast<uint32_t>(static_cast<int64_t>(d)));
}
inline uint32_t U32(const Napi::CallbackInfo& info, size_t i) {
  return static_cast<uint32_t>(IntegerArg(info, i, 0, 4294967295.0, "an unsigned 32-bit integer"));
}
inline uint64_t BigU64(const Napi::CallbackInfo& info, size_t i) {
  Napi::Value v = info[i];
  if (!v.IsBigInt()) throw Napi::TypeError::New(info.Env(), "argument " + std::to_string(i) + ": expected a bigint");
  bool lossless = false;
  uint64_t out = v.As<Napi::BigInt>().Uint64Value(&lossless);
  if (!lossless) ThrowArg(info, i, "a bigint in [0, 2^64)");
  return out;
}
// A typed array argument (any element type unless `type` says which).
inline Napi::TypedArray TypedArg(const Napi::CallbackInfo& info, size_t i, const char* expected) {
  Napi::Value v = info[i];
  if (!v.IsTypedArray()) throw Napi::TypeError::New(info.Env(), "argument " + std::to_string(i) + ": expected " + expected);
  return v.As<Napi::TypedArray>();
}
template <typename T>
inline T TypedArg(const Napi::CallbackInfo& info, size_t i, napi_typedarray_type type, const char* expected) {
  Napi::TypedArray ta = TypedArg(info, i, expected);
  if (ta.TypedArrayType() != type) throw Napi::TypeError::New(info.Env(), "argument " + std::to_string(i) + ": expected " + expected);
  return info[i].As<T>();
}
inline std::string StringArg(const Napi::CallbackInfo& info, size_t i) {
  Napi::Value v = info[i];
  if (!v.IsString()) throw Napi::TypeError::New(info.Env(), "argument " + std::to_string(i) + ": expected a string");
  return v.As<Napi::String>().Utf8Value();
}
inline Napi::Value Num(Napi::Env env, double v) { return Napi::Number::New(env, v); }

void InitErrors(Napi::Env env, Napi::Object exports);
void InitUffd(Napi::Env env, Napi::Object exports);
void InitMemory(Napi::Env env, Napi::Object exports);
void InitSys(Napi::Env env, Napi::Object exports);
void InitSocket(Napi::Env env, Napi::Object exports);

}  // namespace postcopy
