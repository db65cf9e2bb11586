// Shared helpers for the postcopy addon. The addon is the kernel boundary and nothing
// more: it converts arguments, makes the call, and reports the kernel's answer. Every
// decision (which call, which flags, what an errno means to the caller) is TypeScript's.
#pragma once

#include <napi.h>
#include <cerrno>
#include <cstdint>

namespace postcopy {

// Throws the JavaScript SystemError class that TypeScript registered at load time
// (see src/native/errors.ts), so the message text is owned by TypeScript.
// `start`/`len` describe the address range the call was about; pass len == 0 when
// the call has no range.
void ThrowErrno(Napi::Env env, const char* syscall, int err, uint64_t start = 0, uint64_t len = 0);

// Argument readers. TypeScript validates types and ranges before calling, so these only
// convert. Addresses travel as Numbers: user-space addresses are below 2^47, well inside
// a double's exact integer range.
inline uint64_t U64(const Napi::CallbackInfo& info, size_t i) {
  return static_cast<uint64_t>(info[i].As<Napi::Number>().Int64Value());
}
inline int64_t I64(const Napi::CallbackInfo& info, size_t i) {
  return info[i].As<Napi::Number>().Int64Value();
}
inline int32_t I32(const Napi::CallbackInfo& info, size_t i) {
  return info[i].As<Napi::Number>().Int32Value();
}
inline uint32_t U32(const Napi::CallbackInfo& info, size_t i) {
  return info[i].As<Napi::Number>().Uint32Value();
}
inline uint64_t BigU64(const Napi::CallbackInfo& info, size_t i) {
  bool lossless = true;
  return info[i].As<Napi::BigInt>().Uint64Value(&lossless);
}
inline Napi::Value Num(Napi::Env env, double v) { return Napi::Number::New(env, v); }

void InitErrors(Napi::Env env, Napi::Object exports);
void InitUffd(Napi::Env env, Napi::Object exports);
void InitMemory(Napi::Env env, Napi::Object exports);
void InitSys(Napi::Env env, Napi::Object exports);

}  // namespace postcopy
