// Module init: registers every export declared by NativeAddon in src/native.ts.
#include <napi.h>

namespace corral {
void InitCgroupfs(Napi::Env env, Napi::Object exports);
void InitSignal(Napi::Env env, Napi::Object exports);
void InitSpawn(Napi::Env env, Napi::Object exports);
void InitPidfd(Napi::Env env, Napi::Object exports);
}  // namespace corral

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  corral::InitCgroupfs(env, exports);
  corral::InitSignal(env, exports);
  corral::InitSpawn(env, exports);
  corral::InitPidfd(env, exports);
  return exports;
}

NODE_API_MODULE(corral, Init)
