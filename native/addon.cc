// Entry point of the postcopy addon: registers each group of kernel calls.
#include "common.h"

namespace postcopy {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  InitErrors(env, exports);
  InitUffd(env, exports);
  InitMemory(env, exports);
  InitSys(env, exports);
  InitSocket(env, exports);
  return exports;
}

}  // namespace postcopy

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return postcopy::Init(env, exports); }

NODE_API_MODULE(postcopy_native, InitAddon)
