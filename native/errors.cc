// Errors cross the boundary as instances of a JavaScript class that TypeScript hands in
// once per thread (setErrorClass), as better-sqlite3 does: C++ supplies the facts
// (syscall, errno, range), TypeScript composes the message.
#include "common.h"

namespace postcopy {

namespace {
// One constructor per addon instance (each worker thread loads its own instance).
struct ErrorClass {
  Napi::FunctionReference ctor;
};
}  // namespace

void ThrowErrno(Napi::Env env, const char* syscall, int err, uint64_t start, uint64_t len) {
  ErrorClass* data = env.GetInstanceData<ErrorClass>();
  Napi::Value range_start = len ? Napi::Number::New(env, static_cast<double>(start)) : env.Undefined();
  Napi::Value range_len = len ? Napi::Number::New(env, static_cast<double>(len)) : env.Undefined();
  if (data == nullptr || data->ctor.IsEmpty()) {
    // Only reachable if the loader forgot setErrorClass; still carry the errno.
    Napi::Error e = Napi::Error::New(env, std::string(syscall) + " failed, errno " + std::to_string(err));
    e.Set("errno", Napi::Number::New(env, err));
    e.Set("syscall", Napi::String::New(env, syscall));
    e.ThrowAsJavaScriptException();
    return;
  }
  Napi::Object error = data->ctor.New({Napi::String::New(env, syscall), Napi::Number::New(env, err),
                                       range_start, range_len});
  if (env.IsExceptionPending()) return;
  Napi::Error(env, error).ThrowAsJavaScriptException();
}

static Napi::Value SetErrorClass(const Napi::CallbackInfo& info) {
  if (!info[0].IsFunction()) throw Napi::TypeError::New(info.Env(), "setErrorClass: expected a constructor");
  auto* data = new ErrorClass();
  data->ctor = Napi::Persistent(info[0].As<Napi::Function>());
  info.Env().SetInstanceData<ErrorClass>(data);
  return info.Env().Undefined();
}

void InitErrors(Napi::Env env, Napi::Object exports) {
  exports.Set("setErrorClass", Napi::Function::New(env, SetErrorClass, "setErrorClass"));
}

}  // namespace postcopy
